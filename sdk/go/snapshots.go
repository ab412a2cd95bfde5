package sandboxd

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// Snapshot is a memory snapshot of a sandbox: every process with its
// memory, the root filesystem's changes and the sandbox's configuration.
type Snapshot struct {
	ID              string // sn-...
	SourceSandboxID string
	ParentID        string // the snapshot the source sandbox was restored from, if any
	App             string
	Name            string
	ImageID         string
	Size            int64 // bytes on disk
	Checksum        string
	CreatedAt       time.Time
	ExpiresAt       time.Time
}

func snapshotFromPB(s *pb.Snapshot) Snapshot {
	return Snapshot{
		ID: s.Id, SourceSandboxID: s.SourceSandboxId, ParentID: s.ParentSnapshotId, App: s.App, Name: s.Name,
		ImageID: s.ImageId, Size: s.SizeBytes, Checksum: s.Checksum,
		CreatedAt: s.CreatedAt.AsTime(), ExpiresAt: s.ExpiresAt.AsTime(),
	}
}

// Snapshot saves the sandbox; it keeps running. A ttl of 0 means the
// default: the expiry of the snapshot this sandbox was restored from, or the
// daemon's default lifetime (7 days).
func (s *Sandbox) Snapshot(ctx context.Context, ttl time.Duration) (Snapshot, error) {
	resp, err := s.c.snapshots.CreateSnapshot(ctx, connect.NewRequest(&pb.CreateSnapshotRequest{
		SandboxId: s.ID, TtlMs: ttl.Milliseconds(),
	}))
	if err != nil {
		return Snapshot{}, wrap(err)
	}
	return snapshotFromPB(resp.Msg.Snapshot), nil
}

// RestoreOptions name the restored sandbox. The zero value keeps the
// snapshot's name (ErrAlreadyExists while a sandbox of that name runs).
type RestoreOptions struct {
	// Name, if set, replaces the name.
	Name string
	// NoName restores without a name.
	NoName bool
}

// Restore starts a new sandbox from a snapshot and returns it once it is
// ready for its first exec. An expired snapshot is ErrExpired; a damaged one
// ErrFailedPrecondition.
func (c *Client) Restore(ctx context.Context, snapshotID string, o RestoreOptions) (*Sandbox, error) {
	req := &pb.RestoreSnapshotRequest{SnapshotId: snapshotID, NameMode: pb.NameMode_NAME_MODE_KEEP}
	switch {
	case o.NoName && o.Name != "":
		return nil, &Error{Class: ErrInvalidArgument, Message: "restore: Name and NoName exclude each other"}
	case o.NoName:
		req.NameMode = pb.NameMode_NAME_MODE_CLEAR
	case o.Name != "":
		req.NameMode, req.Name = pb.NameMode_NAME_MODE_REPLACE, o.Name
	}
	resp, err := c.snapshots.RestoreSnapshot(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{ID: resp.Msg.Sandbox.Id, c: c}, nil
}

// ListSnapshots lists the snapshots, newest first.
func (c *Client) ListSnapshots(ctx context.Context) ([]Snapshot, error) {
	resp, err := c.snapshots.ListSnapshots(ctx, connect.NewRequest(&pb.ListSnapshotsRequest{}))
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]Snapshot, 0, len(resp.Msg.Snapshots))
	for _, s := range resp.Msg.Snapshots {
		out = append(out, snapshotFromPB(s))
	}
	return out, nil
}

// GetSnapshot returns one snapshot.
func (c *Client) GetSnapshot(ctx context.Context, id string) (Snapshot, error) {
	resp, err := c.snapshots.GetSnapshot(ctx, connect.NewRequest(&pb.GetSnapshotRequest{Id: id}))
	if err != nil {
		return Snapshot{}, wrap(err)
	}
	return snapshotFromPB(resp.Msg.Snapshot), nil
}

// DeleteSnapshot deletes a snapshot; sandboxes restored from it go on.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	_, err := c.snapshots.DeleteSnapshot(ctx, connect.NewRequest(&pb.DeleteSnapshotRequest{Id: id}))
	return wrap(err)
}
