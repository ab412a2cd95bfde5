package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// RestoreTargets is a SnapshotEngine's optional ability to do a restore's
// work ahead of time (provision.Provisioner): PrepareRestore readies a
// container for sandbox req.ID from the checkpoint in dir, so that a later
// Restore of that id from that checkpoint only resumes it.
type RestoreTargets interface {
	PrepareRestore(ctx context.Context, req ProvisionRequest, dir string) error
	// DiscardRestoreTarget removes the target of sandbox id if it was not
	// used. Idempotent.
	DiscardRestoreTarget(ctx context.Context, id string) error
}

// prepareTimeout bounds the background preparation of one target.
const prepareTimeout = time.Minute

// SetRestoreTargets sets how many restore targets are kept ready (0, the
// default, keeps none). A target is a sandbox prepared for one snapshot up
// to the engine's last step (network, root, mounts, a created container),
// so that the next restore of that snapshot only resumes the checkpoint
// into it. Targets go to the snapshots taken or restored most recently;
// each holds an idle engine container and a network address. Call before
// serving.
func (s *Snapshots) SetRestoreTargets(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxTargets = max(n, 0)
}

// claimTarget takes the ready target of snapID, if any, and returns the
// sandbox id it was prepared for ("" when there is none).
func (s *Snapshots) claimTarget(snapID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.targets[snapID]
	delete(s.targets, snapID)
	return id
}

// prewarm prepares a target for snapID in the background, unless one is
// ready or being prepared, and evicts the least recently prepared targets
// beyond the limit.
func (s *Snapshots) prewarm(snapID string) {
	rt, ok := s.eng.(RestoreTargets)
	if !ok {
		return
	}
	s.mu.Lock()
	if s.maxTargets == 0 || s.closed || s.targets[snapID] != "" || s.preparing[snapID] {
		s.mu.Unlock()
		return
	}
	s.preparing[snapID] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		id := newID("sb-")
		ctx, cancel := context.WithTimeout(s.bg, prepareTimeout)
		defer cancel()
		start := time.Now()
		err := s.prepareTarget(ctx, rt, snapID, id)
		var victims []string
		s.mu.Lock()
		delete(s.preparing, snapID)
		gone := s.gone[snapID]
		delete(s.gone, snapID)
		switch {
		case err != nil:
		case s.closed || gone:
			victims = append(victims, id)
		default:
			s.targets[snapID] = id
			s.order = append(slices.DeleteFunc(s.order, func(x string) bool { return x == snapID }), snapID)
			for len(s.targets) > s.maxTargets && len(s.order) > 0 {
				old := s.order[0]
				s.order = s.order[1:]
				if v, ok := s.targets[old]; ok {
					victims = append(victims, v)
					delete(s.targets, old)
				}
			}
		}
		s.mu.Unlock()
		if err != nil {
			if s.bg.Err() == nil {
				s.log.Warn("preparing a restore target failed", "snapshot_id", snapID, "err", err)
			}
		} else {
			s.log.Debug("restore target ready", "snapshot_id", snapID, "sandbox_id", id, "took", time.Since(start))
		}
		for _, v := range victims {
			if err := rt.DiscardRestoreTarget(context.WithoutCancel(s.bg), v); err != nil {
				s.log.Warn("discarding a restore target", "sandbox_id", v, "err", err)
			}
		}
	}()
}

// prepareTarget readies sandbox id for a restore of snapID. The snapshot's
// checksums are not verified here: the restore that uses the target does it.
func (s *Snapshots) prepareTarget(ctx context.Context, rt RestoreTargets, snapID, id string) error {
	sn, err := s.store.Get(ctx, snapID)
	if err != nil {
		return err
	}
	var rec snapshotRecord
	if err := json.Unmarshal(sn.Record, &rec); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	spec := rec.Spec
	req, err := s.provisionRequest(ctx, rec, &spec)
	if err != nil {
		return err
	}
	req.ID = id
	return rt.PrepareRestore(ctx, req, s.store.Path(snapID))
}

// dropTarget discards the target of snapID, if any (its snapshot is gone),
// and one being prepared when it is ready.
func (s *Snapshots) dropTarget(snapID string) {
	s.mu.Lock()
	if s.preparing[snapID] {
		s.gone[snapID] = true
	}
	s.mu.Unlock()
	id := s.claimTarget(snapID)
	if id == "" {
		return
	}
	if rt, ok := s.eng.(RestoreTargets); ok {
		if err := rt.DiscardRestoreTarget(context.WithoutCancel(s.bg), id); err != nil {
			s.log.Warn("discarding a restore target", "sandbox_id", id, "err", err)
		}
	}
}

// Close stops preparing targets and removes the ready ones. The sandboxes
// themselves keep running.
func (s *Snapshots) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	s.mu.Lock()
	var ids []string
	for snap, id := range s.targets {
		ids = append(ids, id)
		delete(s.targets, snap)
	}
	s.order = nil
	s.mu.Unlock()
	rt, ok := s.eng.(RestoreTargets)
	if !ok {
		return
	}
	for _, id := range ids {
		if err := rt.DiscardRestoreTarget(context.Background(), id); err != nil {
			s.log.Warn("discarding a restore target", "sandbox_id", id, "err", err)
		}
	}
}
