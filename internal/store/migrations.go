package store

// migrations is the ordered schema history. Never edit a migration that has
// shipped; append a new one. Times are unix nanoseconds; JSON columns hold
// small maps and lists.
var migrations = []string{
	// 1: apps, sandboxes, secrets, layers and images.
	`
CREATE TABLE apps (
	name       TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
);

CREATE TABLE sandboxes (
	id            TEXT PRIMARY KEY,
	app           TEXT NOT NULL REFERENCES apps(name),
	name          TEXT NOT NULL DEFAULT '',
	image_ref     TEXT NOT NULL,
	image_id      TEXT NOT NULL,
	spec_json     TEXT NOT NULL,   -- the create request, secret values excluded
	tags_json     TEXT NOT NULL DEFAULT '{}',
	state         TEXT NOT NULL,   -- creating | running | finished
	finish_reason TEXT NOT NULL DEFAULT '',
	exit_code     INTEGER NOT NULL DEFAULT 0,
	error         TEXT NOT NULL DEFAULT '',
	runtime_json  TEXT NOT NULL DEFAULT '{}', -- engine and network details needed to find it again
	created_at    INTEGER NOT NULL,
	started_at    INTEGER NOT NULL DEFAULT 0,
	finished_at   INTEGER NOT NULL DEFAULT 0,
	deadline      INTEGER NOT NULL DEFAULT 0
);
-- a name is unique among the sandboxes of an app that have not finished
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(app, name) WHERE name != '' AND state != 'finished';
CREATE INDEX sandboxes_state ON sandboxes(state);

CREATE TABLE secrets (
	name        TEXT PRIMARY KEY,
	values_json TEXT NOT NULL,
	created_at  INTEGER NOT NULL
);

CREATE TABLE layers (
	digest     TEXT PRIMARY KEY,  -- sha256:<hex> of the layer's uncompressed tar
	size       INTEGER NOT NULL,  -- bytes of the tar
	created_at INTEGER NOT NULL
);

CREATE TABLE images (
	id          TEXT PRIMARY KEY, -- im-<hex>
	layers_json TEXT NOT NULL,    -- ordered digests, lowest first
	config_json TEXT NOT NULL,    -- env, workdir, entrypoint defaults
	source      TEXT NOT NULL DEFAULT '',
	size        INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL,
	last_used   INTEGER NOT NULL DEFAULT 0,
	expires_at  INTEGER NOT NULL DEFAULT 0 -- 0: never
);

CREATE TABLE image_names (
	name     TEXT PRIMARY KEY,    -- e.g. busybox, debian-slim
	image_id TEXT NOT NULL REFERENCES images(id)
);
`,
	// 2: memory snapshots, and which snapshot a restored sandbox came from.
	`
CREATE TABLE snapshots (
	id                 TEXT PRIMARY KEY, -- sn-<16 hex>; its files are DATA/snapshots/<id>/
	source_sandbox_id  TEXT NOT NULL,
	parent_snapshot_id TEXT NOT NULL DEFAULT '',
	app                TEXT NOT NULL,
	record_json        TEXT NOT NULL,    -- what a restore needs: spec, image, layers
	size               INTEGER NOT NULL, -- bytes on disk
	checksum           TEXT NOT NULL,    -- sha256 of the manifest (which lists every file's checksum)
	created_at         INTEGER NOT NULL,
	expires_at         INTEGER NOT NULL
);
CREATE INDEX snapshots_expires ON snapshots(expires_at);

CREATE TABLE sandbox_origins (
	sandbox_id  TEXT PRIMARY KEY,  -- a sandbox restored from a snapshot
	snapshot_id TEXT NOT NULL,     -- that snapshot (it may have been deleted since)
	expires_at  INTEGER NOT NULL   -- its expiry, inherited by snapshots of the sandbox
);
`,
	// 3: image lifetimes by last use (filesystem and directory snapshots).
	// images.expires_at is then max(created_at, last_used) + idle_ttl.
	`
ALTER TABLE images ADD COLUMN idle_ttl INTEGER NOT NULL DEFAULT 0; -- nanoseconds; 0: no expiry by idleness
CREATE INDEX images_expires ON images(expires_at) WHERE expires_at != 0;
`,
	// 4: images mounted into running sandboxes (live mounts). Rows of
	// sandboxes that finished are pruned.
	`
CREATE TABLE live_mounts (
	sandbox_id TEXT NOT NULL,
	path       TEXT NOT NULL,    -- absolute, clean
	image_ref  TEXT NOT NULL,    -- as the caller gave it
	image_id   TEXT NOT NULL,    -- im-<hex>
	stage      TEXT NOT NULL,    -- its name in the sandbox's staging dir and the agent's
	mounted_at INTEGER NOT NULL,
	PRIMARY KEY (sandbox_id, path)
);
CREATE INDEX live_mounts_image ON live_mounts(image_id);
`,
	// 5: layers recorded before their files reach the disk (a snapshot's
	// layer is flushed in the background). Layers recorded before this
	// migration were flushed first: durable.
	`
ALTER TABLE layers ADD COLUMN durable INTEGER NOT NULL DEFAULT 1; -- 0: not yet known to be on disk (checked at start-up)
CREATE INDEX layers_not_durable ON layers(digest) WHERE durable = 0;
`,
}
