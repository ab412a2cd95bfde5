// Package runtime drives gVisor's runsc binary: it turns a Spec into an OCI
// bundle and runs, signals, inspects, checkpoints, restores and removes
// containers through the runsc command line. The daemon's sandbox layer
// imports it; nothing below it does.
//
// # Terms
//
//   - Container id: the name runsc knows a container by. Every container we
//     make is the root (and only) container of its own gVisor sandbox, so the
//     container id is also the sandbox id. runsc resolves ids by PREFIX, so
//     callers must use fixed-length ids (sandboxd uses "sb-" followed by 16
//     hex characters); the Runtime also refuses to create an id that is a
//     prefix of a live one (or has a live one as its prefix), and every
//     operation on an existing id first checks that exactly that id exists.
//   - Bundle: a directory holding config.json (the OCI runtime spec). The
//     Runtime writes config.json; the caller owns the directory.
//   - Rootfs: a directory prepared by the caller (typically a host overlay
//     mount of image layers). It must be a real directory, not a symlink.
//     gVisor puts its own overlay on top, with its upper layer kept in a
//     per-sandbox scratch directory (Spec.ScratchDir), so writes made in the
//     sandbox never reach the rootfs or the sources of bind mounts.
//   - Root dir: runsc's --root, the directory where runsc keeps the state of
//     the containers it knows. One per sandboxd data dir; List reads it.
//
// # Lifecycle
//
//	Run ──► running ──(init exits / Kill)──► stopped ──Delete──► gone
//	            └─Checkpoint(leaveRunning=false)──► stopped
//	image ──Restore──► running
//
// Run creates and starts a container (runsc run --detach). Wait blocks until
// the init exits and reports its exit code; WaitStopped only waits. Delete
// removes a stopped container (force: any container). Cleanup is the
// idempotent "make sure nothing is left" used after failures and at start-up.
//
// # Stdio
//
// runsc create/run/start/restore hand their stdio to the sandbox, so a pipe
// given to them stays open for the sandbox's lifetime. The Runtime therefore
// never gives runsc a pipe: stdin is /dev/null, stdout and stderr are files
// (the init's log file for Run and Restore, temporary files otherwise).
//
// A Runtime is safe for concurrent use; two operations on the same container
// id at once are serialised by runsc's own locks, not by this package.
package runtime
