// Package snapshot keeps sandboxd's memory snapshots on disk and in the
// metadata database: their directories, manifests and checksums, their
// expiry and the collector that deletes expired ones. It knows nothing of
// what a snapshot holds beyond files and an opaque record; internal/sandbox
// fills it (through the engine) and restores from it. Only internal/sandbox
// and cmd/sandboxd import it.
//
// # Terms
//
//   - Snapshot id: "sn-" and 16 hex digits. Its files live in
//     DATA/snapshots/<id>/ and never change once it is committed.
//   - Pending snapshot: a directory under DATA/snapshots/tmp/ being filled;
//     invisible to every reader until Commit.
//   - Manifest: DATA/snapshots/<id>/manifest.json, the size and CRC-32C of
//     every other file; the snapshot's checksum is the SHA-256 of the
//     manifest and is kept in the database. A restore checks the manifest
//     before it hands the files to the engine and the files while the
//     engine reads them (Lease.Verify), and uses nothing restored before
//     both have passed.
//   - Origin: the snapshot a sandbox was restored from, with that
//     snapshot's expiry, which snapshots of the sandbox inherit.
//
// # On disk (the crash-safe recipe)
//
// Begin makes a pending directory; the caller fills it (StartFlush starts
// its writeback meanwhile); Commit sums and fsyncs every file and
// directory, writes the manifest, renames the directory into place and
// inserts the row in one transaction. Delete removes the row first and the
// files after. Startup removes pending directories and directories the
// database does not know, and forgets rows whose directory is gone.
package snapshot
