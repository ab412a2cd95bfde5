package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Live mounts: images mounted into a sandbox while it runs, and unmounted
// again. The engine stages each image's tree read-only where the sandbox's
// agent can see it (ImageStager, no copy), and the agent mounts a
// copy-on-write view of it on the path (MountAgent). A live mount is
// recorded before it is made and forgotten after it is undone, so the
// records are the truth a restarted daemon converges to (reconcileMounts).
// Memory snapshots carry a sandbox's live mounts; restores stage them again
// before the engine resumes.

// LiveMount is an image mounted into a running sandbox.
type LiveMount struct {
	Path    string    `json:"path"`     // absolute, clean
	Image   string    `json:"image"`    // the reference the caller gave
	ImageID string    `json:"image_id"` // what it resolved to
	Stage   string    `json:"stage"`    // its name in the sandbox's staging dir
	At      time.Time `json:"at"`       // when it was mounted
}

// StagedImage is an image shown to a sandbox's agent under a stage name.
type StagedImage struct {
	Stage string
	Image ImageInfo
}

// ImageStager is the optional ability of a Provisioner to show images to
// the agent of a running sandbox, without copying them.
type ImageStager interface {
	// StageImage shows img's tree, read-only, to sandbox h under stage (a
	// name from newStageName). Idempotent. A sandbox brought up without a
	// staging dir is ErrFailedPrecondition.
	StageImage(ctx context.Context, h Handle, stage string, img ImageInfo) error
	// UnstageImage removes what StageImage showed. Idempotent.
	UnstageImage(ctx context.Context, h Handle, stage string) error
	// SyncStage makes h's staged images exactly staged (after a restart).
	SyncStage(ctx context.Context, h Handle, staged []StagedImage) error
}

// MountAgent is the optional ability of an AgentConn to mount staged
// images. Both calls are idempotent.
type MountAgent interface {
	MountImage(ctx context.Context, stage, path string) error
	UnmountImage(ctx context.Context, stage, path string) error
}

func newStageName() string {
	var b [6]byte
	rand.Read(b[:])
	return "m" + hex.EncodeToString(b[:])
}

// mountDeps returns the abilities live mounts need from l's engine and agent.
func (m *Manager) mountDeps(l *live) (ImageStager, MountAgent, error) {
	st, ok := m.prov.(ImageStager)
	if !ok {
		return nil, nil, errdefs.FailedPrecondition("this engine cannot mount images into running sandboxes")
	}
	ma, ok := l.agent.(MountAgent)
	if !ok {
		return nil, nil, errdefs.FailedPrecondition("sandbox %s: its agent connection cannot mount images", l.id)
	}
	return st, ma, nil
}

// lockMounts takes l's mount lock and checks that l is still running. The
// caller unlocks l.mountMu on success.
func (m *Manager) lockMounts(l *live) error {
	l.mountMu.Lock()
	m.mu.Lock()
	finishing := l.finishing
	m.mu.Unlock()
	if finishing {
		l.mountMu.Unlock()
		return errdefs.FailedPrecondition("sandbox %s is finishing", l.id)
	}
	return nil
}

// MountImage mounts image ref at p in running sandbox id, replacing what p
// showed and creating it if missing. Nothing is copied; the sandbox's writes
// under p stay private to it. Mounting resolves the image, which counts as a
// use of it. Errors: bad path or ref ErrInvalidArgument; unknown sandbox or
// image ErrNotFound; a sandbox not running, or p within or above another
// live mount, ErrFailedPrecondition; p mounted already ErrAlreadyExists.
// On error nothing of the mount is left.
func (m *Manager) MountImage(ctx context.Context, id, ref, p string) (LiveMount, error) {
	if ref == "" {
		return LiveMount{}, errdefs.Invalid("no image to mount")
	}
	if err := CheckMountPath(p); err != nil {
		return LiveMount{}, err
	}
	p = path.Clean(p)
	l, err := m.running(ctx, id)
	if err != nil {
		return LiveMount{}, err
	}
	stager, agent, err := m.mountDeps(l)
	if err != nil {
		return LiveMount{}, err
	}
	if err := m.lockMounts(l); err != nil {
		return LiveMount{}, err
	}
	defer l.mountMu.Unlock()
	have, err := m.repo.liveMounts(ctx, id)
	if err != nil {
		return LiveMount{}, err
	}
	if err := checkNewLiveMount(have, p); err != nil {
		return LiveMount{}, err
	}
	img, err := m.images.ResolveImage(ctx, ref)
	if err != nil {
		return LiveMount{}, fmt.Errorf("mount at %s: %w", p, err)
	}
	lm := LiveMount{Path: p, Image: ref, ImageID: img.ID, Stage: newStageName(), At: m.clock.Now()}
	if err := m.addLiveMount(ctx, id, l.handle, stager, agent, lm, img); err != nil {
		return LiveMount{}, err
	}
	return lm, nil
}

// addLiveMount makes lm (of image img) in sandbox id, brought up as h: it
// is recorded, then staged, then mounted by the agent. On error nothing of
// it is left.
func (m *Manager) addLiveMount(ctx context.Context, id string, h Handle, stager ImageStager, agent MountAgent, lm LiveMount, img ImageInfo) error {
	if err := m.repo.insertLiveMount(ctx, id, lm); err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	undo := func(err error) error {
		if uerr := stager.UnstageImage(bg, h, lm.Stage); uerr != nil {
			m.log.Warn("undo staging", "sandbox_id", id, "stage", lm.Stage, "err", uerr)
		}
		m.repo.deleteLiveMount(bg, id, lm.Path)
		return fmt.Errorf("mount %s at %s: %w", lm.Image, lm.Path, err)
	}
	start := time.Now()
	if err := stager.StageImage(ctx, h, lm.Stage, img); err != nil {
		return undo(err)
	}
	staged := time.Since(start)
	if err := agent.MountImage(ctx, lm.Stage, lm.Path); err != nil {
		// The agent may have mounted before the call broke: unmount is
		// idempotent.
		agent.UnmountImage(bg, lm.Stage, lm.Path)
		return undo(err)
	}
	m.log.Info("image mounted", "sandbox_id", id, "image", img.ID, "path", lm.Path,
		"stage", staged, "took", time.Since(start))
	return nil
}

// checkNewLiveMount refuses p when it is, lies within or holds a live mount.
func checkNewLiveMount(have []LiveMount, p string) error {
	if len(have) >= MaxMounts {
		return errdefs.Exhausted("%d images mounted already: at most %d", len(have), MaxMounts)
	}
	for _, lm := range have {
		switch {
		case lm.Path == p:
			return errdefs.AlreadyExists("image %s is mounted at %s already: unmount it first", lm.Image, p)
		case within(p, lm.Path) || within(lm.Path, p):
			return errdefs.FailedPrecondition("%s overlaps the image %s mounted at %s", p, lm.Image, lm.Path)
		}
	}
	return nil
}

// UnmountImage unmounts the image mounted at p in running sandbox id since
// it started; p then shows what it held before. No live mount at p is
// ErrNotFound.
func (m *Manager) UnmountImage(ctx context.Context, id, p string) error {
	if err := CheckMountPath(p); err != nil {
		return err
	}
	p = path.Clean(p)
	l, err := m.running(ctx, id)
	if err != nil {
		return err
	}
	stager, agent, err := m.mountDeps(l)
	if err != nil {
		return err
	}
	if err := m.lockMounts(l); err != nil {
		return err
	}
	defer l.mountMu.Unlock()
	lm, err := m.repo.liveMount(ctx, id, p)
	if err != nil {
		return err
	}
	if err := agent.UnmountImage(ctx, lm.Stage, p); err != nil {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := stager.UnstageImage(ctx, l.handle, lm.Stage); err != nil {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := m.repo.deleteLiveMount(context.WithoutCancel(ctx), id, p); err != nil {
		return err
	}
	m.log.Info("image unmounted", "sandbox_id", id, "image", lm.ImageID, "path", p)
	return nil
}

// LiveMounts lists the images mounted into sandbox id while it runs, by
// path. A finished sandbox has none.
func (m *Manager) LiveMounts(ctx context.Context, id string) ([]LiveMount, error) {
	sb, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if sb.State == StateFinished {
		return nil, nil
	}
	return m.repo.liveMounts(ctx, id)
}

// reconcileMounts brings an adopted sandbox's live mounts back to its
// records after a daemon restart: what is staged but not recorded goes, what
// is recorded is staged and mounted (both idempotent), which also completes
// a mount the daemon stopped in the middle of.
func (m *Manager) reconcileMounts(ctx context.Context, l *live) error {
	lms, err := m.repo.liveMounts(ctx, l.id)
	if err != nil {
		return err
	}
	stager, ok := m.prov.(ImageStager)
	if !ok {
		return nil
	}
	staged, err := m.stagedImages(ctx, lms)
	if err != nil {
		return err
	}
	if err := stager.SyncStage(ctx, l.handle, staged); err != nil {
		return err
	}
	agent, ok := l.agent.(MountAgent)
	if !ok {
		return nil
	}
	for _, lm := range lms {
		if err := agent.MountImage(ctx, lm.Stage, lm.Path); err != nil {
			return fmt.Errorf("mount %s at %s again: %w", lm.ImageID, lm.Path, err)
		}
	}
	return nil
}

// stagedImages resolves the images of lms (by id: the names may have moved).
func (m *Manager) stagedImages(ctx context.Context, lms []LiveMount) ([]StagedImage, error) {
	out := make([]StagedImage, 0, len(lms))
	for _, lm := range lms {
		img, err := m.images.ResolveImage(ctx, lm.ImageID)
		if err != nil {
			return nil, fmt.Errorf("image %s mounted at %s: %w", lm.ImageID, lm.Path, err)
		}
		out = append(out, StagedImage{Stage: lm.Stage, Image: img})
	}
	return out, nil
}
