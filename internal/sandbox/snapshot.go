package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/fsutil"
	"github.com/sandboxd/sandboxd/internal/snapshot"
)

// SnapshotEngine is the provisioner's ability to save a running sandbox
// into a directory and to bring up a new sandbox from one.
type SnapshotEngine interface {
	// Checkpoint saves the running sandbox h into dir (existing, empty). The
	// sandbox is paused during the save and keeps running after it.
	Checkpoint(ctx context.Context, h Handle, dir string) error
	// Restore brings up sandbox req.ID from dir, as Provision does (on error
	// nothing is left). Only req.ID, req.Image, req.Resources, req.Mounts and
	// req.Staged are used: the restored agent keeps its own configuration and
	// the returned Handle carries its token.
	Restore(ctx context.Context, req ProvisionRequest, dir string) (Handle, error)
}

// NameMode says what a restored sandbox is called.
type NameMode int

const (
	NameKeep    NameMode = iota // the snapshot's name (unique among running sandboxes of the app)
	NameClear                   // no name
	NameReplace                 // a new name
)

// SnapshotInfo is a snapshot as callers see it.
type SnapshotInfo struct {
	ID              string
	SourceSandboxID string
	ParentID        string
	App             string
	Name            string
	ImageID         string
	Size            int64
	Checksum        string
	CreatedAt       time.Time
	ExpiresAt       time.Time
}

// snapshotRecord is what a restore needs besides the engine's files.
type snapshotRecord struct {
	Spec    Spec              `json:"spec"`
	ImageID string            `json:"image_id"`
	Layers  []string          `json:"layers"`
	Tags    map[string]string `json:"tags,omitempty"`
	// LiveMounts are the images the sandbox had mounted while running: a
	// restore stages them again, under the same names, before the engine
	// resumes (the restored mounts read them there).
	LiveMounts []LiveMount `json:"live_mounts,omitempty"`
}

// Snapshots takes memory snapshots of the Manager's sandboxes and restores
// them as new sandboxes of that Manager. Safe for concurrent use.
type Snapshots struct {
	m     *Manager
	store *snapshot.Store
	eng   SnapshotEngine
	log   *slog.Logger

	// bg is the context of background work (restore targets); stop ends it.
	bg   context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu   sync.Mutex
	busy map[string]bool // sandboxes being snapshotted
	// Restore targets (restoretargets.go): ready ones by snapshot id, the
	// order they became ready in, and the snapshots being prepared for.
	maxTargets int
	targets    map[string]string
	order      []string
	preparing  map[string]bool
	gone       map[string]bool // deleted while a target was being prepared
	closed     bool
}

// NewSnapshots returns the snapshot side of m, keeping snapshots in store.
// Call Close at the end.
func NewSnapshots(m *Manager, store *snapshot.Store, eng SnapshotEngine, log *slog.Logger) *Snapshots {
	bg, stop := context.WithCancel(context.Background())
	return &Snapshots{m: m, store: store, eng: eng, log: log, bg: bg, stop: stop, busy: map[string]bool{},
		targets: map[string]string{}, preparing: map[string]bool{}, gone: map[string]bool{}}
}

func (s *Snapshots) info(sn snapshot.Snapshot) SnapshotInfo {
	var rec snapshotRecord
	json.Unmarshal(sn.Record, &rec)
	return SnapshotInfo{
		ID: sn.ID, SourceSandboxID: sn.SourceSandboxID, ParentID: sn.ParentID, App: sn.App,
		Name: rec.Spec.Name, ImageID: rec.ImageID, Size: sn.Size, Checksum: sn.Checksum,
		CreatedAt: sn.CreatedAt, ExpiresAt: sn.ExpiresAt,
	}
}

// Snapshot saves the running sandbox id; it keeps running. ttl 0 takes the
// expiry of the snapshot the sandbox was restored from, if any, else the
// store's default. A second snapshot of the same sandbox while one is being
// taken is ErrFailedPrecondition. Execs may run meanwhile; they go on in the sandbox and
// exist, detached from any client, in every restored copy. A failed
// snapshot leaves nothing behind.
func (s *Snapshots) Snapshot(ctx context.Context, id string, ttl time.Duration) (SnapshotInfo, error) {
	begin := time.Now()
	s.mu.Lock()
	if s.busy[id] {
		s.mu.Unlock()
		return SnapshotInfo{}, errdefs.FailedPrecondition("a snapshot of %s is being taken; try again when it is done", id)
	}
	s.busy[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.busy, id)
		s.mu.Unlock()
	}()
	l, err := s.m.running(ctx, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	// No image is mounted or unmounted while the sandbox is saved.
	if err := s.m.lockMounts(l); err != nil {
		return SnapshotInfo{}, err
	}
	defer l.mountMu.Unlock()
	live, err := s.m.repo.liveMounts(ctx, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	sb, _, err := s.m.repo.get(ctx, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	origin, restored, err := s.store.OriginOf(ctx, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	now := s.m.clock.Now()
	expires, err := s.store.Expiry(now, ttl, origin.ExpiresAt)
	if err != nil {
		return SnapshotInfo{}, err
	}
	img, err := s.m.images.ResolveImage(ctx, sb.ImageID)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: image: %w", id, err)
	}
	rec := snapshotRecord{Spec: sb.Spec, ImageID: img.ID, Layers: img.Layers, Tags: sb.Tags, LiveMounts: live}
	p, err := s.store.Begin()
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer p.Abort()
	// The entrypoint's log as far as the daemon has it: never beyond what the
	// agent had sent when frozen, so a restored copy's follower resumes from it.
	if err := copyDir(filepath.Join(s.m.cfg.DataDir, "logs", id), filepath.Join(p.Dir, "logs")); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: logs: %w", id, err)
	}
	meter, _ := s.eng.(MemoryMeter)
	s.m.primeMemoryScan(ctx, l, meter, s.log.With("sandbox_id", id))
	// No staged transfer step is in flight while the sandbox is saved
	// (transfers.go): steps in flight end first, new ones wait.
	releaseTransfers, err := l.transfers.hold(ctx)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: wait for transfers: %w", id, err)
	}
	start := time.Now()
	// The engine's files go to disk while it writes them: less for Commit's
	// fsync to wait for.
	stopFlush := p.StartFlush()
	err = s.eng.Checkpoint(ctx, l.handle, p.Dir)
	stopFlush()
	releaseTransfers()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	took := time.Since(start)
	sn := snapshot.Snapshot{
		SourceSandboxID: id, App: sb.Spec.App, Record: []byte(mustJSON(rec)),
		CreatedAt: now, ExpiresAt: expires,
	}
	if restored {
		sn.ParentID = origin.SnapshotID
	}
	sn, err = p.Commit(ctx, sn)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	s.log.Info("snapshot taken", "sandbox_id", id, "snapshot_id", sn.ID, "size", sn.Size,
		"before", start.Sub(begin), "checkpoint", took, "commit", time.Since(start)-took, "total", time.Since(begin))
	s.prewarm(sn.ID)
	return s.info(sn), nil
}

// Restore starts a new sandbox from snapshot snapID: a new id and network,
// the snapshot's app, tags, limits and lifetime (counted from now), named as
// mode says (a kept or given name in use is ErrAlreadyExists). It returns
// once the agent answers. An expired snapshot is ErrExpired, a damaged one
// ErrFailedPrecondition.
func (s *Snapshots) Restore(ctx context.Context, snapID string, mode NameMode, name string) (*Sandbox, error) {
	lease, err := s.store.AcquireUnverified(ctx, snapID)
	if err != nil {
		return nil, err
	}
	defer lease.Release()
	// The files are verified while the engine restores from them, instead
	// of before. Waiting is deferred after the release, so it runs first:
	// the files stay leased until the reading has ended.
	verified := s.verifyInBackground(ctx, lease)
	defer verified()
	sn, dir := lease.Snapshot, lease.Dir
	var rec snapshotRecord
	if err := json.Unmarshal(sn.Record, &rec); err != nil {
		return nil, fmt.Errorf("restore %s: record: %w", snapID, err)
	}
	spec := rec.Spec
	switch mode {
	case NameKeep:
	case NameClear:
		spec.Name = ""
	case NameReplace:
		if !ValidName(name) {
			return nil, errdefs.Invalid("bad sandbox name %q: use letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", name)
		}
		spec.Name = name
	default:
		return nil, errdefs.Invalid("bad name mode %d", mode)
	}
	m := s.m
	req, err := s.provisionRequest(ctx, rec, &spec)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", snapID, err)
	}
	// A target prepared for this snapshot decides the new sandbox's id; the
	// engine's Restore then uses it. Until the engine has it, a failure
	// discards it.
	id, handedOver := s.claimTarget(snapID), false
	prepared := id != ""
	if prepared {
		defer func() {
			if rt, ok := s.eng.(RestoreTargets); ok && !handedOver {
				rt.DiscardRestoreTarget(context.WithoutCancel(ctx), id)
			}
		}()
	} else {
		id = newID("sb-")
	}
	sb := &Sandbox{ID: id, Spec: spec, ImageID: rec.ImageID, Tags: rec.Tags, State: StateCreating, CreatedAt: m.clock.Now()}
	if sb.Tags == nil {
		sb.Tags = map[string]string{}
	}
	if err := m.repo.insert(ctx, sb); err != nil {
		return nil, err
	}
	log := s.log.With("sandbox_id", sb.ID, "snapshot_id", snapID)
	fail := func(err error) (*Sandbox, error) {
		log.Warn("restore failed", "err", err)
		m.repo.setFinished(context.WithoutCancel(ctx), sb.ID, ReasonFailed, ExitCodeLost, err.Error(), m.clock.Now())
		m.repo.deleteLiveMountsOf(context.WithoutCancel(ctx), sb.ID)
		return nil, fmt.Errorf("restore %s: %w", snapID, err)
	}
	for _, lm := range rec.LiveMounts {
		if err := m.repo.insertLiveMount(ctx, sb.ID, lm); err != nil {
			return fail(err)
		}
	}
	if err := s.store.SetOrigin(ctx, sb.ID, sn); err != nil {
		return fail(err)
	}
	if err := copyDir(filepath.Join(dir, "logs"), filepath.Join(m.cfg.DataDir, "logs", sb.ID)); err != nil {
		return fail(fmt.Errorf("logs: %w", err))
	}
	start := time.Now()
	req.ID, handedOver = sb.ID, true
	h, err := s.eng.Restore(ctx, req, dir)
	// Nothing restored is trusted before its files are: a damaged snapshot
	// is refused as such, whatever the engine made of it.
	if verr := verified(); verr != nil {
		if err == nil {
			m.prov.Destroy(context.WithoutCancel(ctx), h)
		}
		return fail(verr)
	}
	if err != nil {
		return fail(err)
	}
	if err := m.goLive(ctx, sb, h); err != nil {
		return fail(err)
	}
	log.Info("sandbox restored", "took", time.Since(start), "prepared_target", prepared)
	s.prewarm(snapID)
	return sb, nil
}

// verifyInBackground starts checking lease's files against their checksums
// and returns the wait for the result (the same for every call).
func (s *Snapshots) verifyInBackground(ctx context.Context, lease *snapshot.Lease) (wait func() error) {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = lease.Verify(ctx)
	}()
	return func() error {
		<-done
		return err
	}
}

// provisionRequest is what the engine needs to restore rec: the same image,
// limits and mounts. Images mounted at create time are staged again at the
// same places before the engine restores (the restored mounts expect them
// there), and so are the images mounted while it ran, under the same stage
// names. spec's mounts get their image ids.
func (s *Snapshots) provisionRequest(ctx context.Context, rec snapshotRecord, spec *Spec) (ProvisionRequest, error) {
	mounts, err := s.m.resolveMounts(ctx, spec)
	if err != nil {
		return ProvisionRequest{}, err
	}
	staged, err := s.m.stagedImages(ctx, rec.LiveMounts)
	if err != nil {
		return ProvisionRequest{}, err
	}
	return ProvisionRequest{
		Image: ImageInfo{ID: rec.ImageID, Layers: rec.Layers}, Resources: spec.Resources, Mounts: mounts, Staged: staged,
	}, nil
}

// Get returns a snapshot, expired or not (until the collector deletes it).
func (s *Snapshots) Get(ctx context.Context, id string) (SnapshotInfo, error) {
	sn, err := s.store.Get(ctx, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return s.info(sn), nil
}

// List returns every snapshot, newest first.
func (s *Snapshots) List(ctx context.Context) ([]SnapshotInfo, error) {
	list, err := s.store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]SnapshotInfo, 0, len(list))
	for _, sn := range list {
		out = append(out, s.info(sn))
	}
	return out, nil
}

// Delete deletes a snapshot. Sandboxes restored from it are not affected.
func (s *Snapshots) Delete(ctx context.Context, id string) error {
	if err := s.store.Delete(ctx, id); err != nil {
		return err
	}
	s.dropTarget(id)
	return nil
}

// copyDir copies the regular files directly in src into dst (created). A
// missing src copies nothing.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := fsutil.CopyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o600); err != nil {
			return err
		}
	}
	return nil
}
