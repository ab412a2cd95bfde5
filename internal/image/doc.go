// Package image is sandboxd's content-addressed layer store: layers, the
// images made of them, the base images built on the host (busybox,
// debian-slim) and the overlay mounts that turn an image into a sandbox's root.
//
// Vocabulary:
//
//   - A layer is a directory tree stored once under its digest. It is kept
//     extracted, in the form the kernel's overlayfs reads as a lowerdir, and is
//     never written to after it has been recorded.
//   - A layer digest ("sha256:<hex>") is the SHA-256 of the layer's canonical
//     tar (see below), whatever route the layer came in by.
//   - An image is an ordered list of layers (lowest first) plus an
//     ImageConfig. Its id is "im-" + the hex SHA-256 of its manifest (the
//     layers and the config), so identical images share one id.
//   - A name ("busybox", "debian-slim") points at one image; a ref is a name
//     or an image id.
//
// On-disk layout under the store's root:
//
//	layers/sha256/<hex>/   one extracted layer, ready to be an overlay lowerdir
//	tmp/                   work space in the same filesystem (extractions,
//	                       builds); anything in it at Startup is a crash leftover
//
// Metadata lives in the SQLite tables layers, images and image_names. The
// crash-safe recipe is: write into tmp/, rename into place, record the row
// as not durable, then make it durable (an fsync of each file and directory
// of a small tree of plain files, one syncfs otherwise; started while the
// tree is digested, finished in the background; WaitDurable waits for it)
// and mark the row durable; delete removes rows first and files after
// (moved into tmp/ at once, removed there in the background); Startup
// removes what the rows do not know, and checks the digest of each layer
// not marked durable: intact (a daemon crash), it is marked; otherwise (a
// machine crash) it is dropped with the images that use it.
//
// The canonical tar of a tree: entries in the order of a depth-first walk with
// each directory's entries sorted by name; the root itself is not an entry;
// directories end in "/"; numeric uid and gid only (no user or group names);
// permission bits with setuid, setgid and sticky; mtime kept, truncated to
// whole seconds (atime and ctime dropped); symlinks, hard links (the second
// and later names of an inode become link entries to the first name in walk
// order), character and block devices and FIFOs kept; sockets skipped;
// extended attributes kept only for user.* and security.capability.
// Overlay whiteouts are written the OCI way: a character device 0/0 named
// NAME becomes an empty regular file ".wh.NAME", and a directory carrying
// trusted.overlay.opaque=y is followed by an empty ".wh..wh..opq" entry.
// Extraction does the reverse, so a layer read back from its directory gives
// the same digest it was stored under. Mtimes are kept because layers taken
// from sandboxes' filesystems carry times that build tools depend on; base
// image builders set every mtime to the Unix epoch so that their layers are
// reproducible.
//
// Everything here needs root (ownership, device nodes, overlay mounts,
// trusted.* xattrs). Store is safe for concurrent use. Only the daemon's
// wiring (cmd/sandboxd) and the sandbox lifecycle code should import it.
package image
