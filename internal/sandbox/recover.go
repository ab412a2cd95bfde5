package sandbox

import (
	"context"
	"fmt"
	"time"
)

// Recover finds again the sandboxes that were running when the daemon
// stopped: those whose engine container still runs and whose agent answers
// are adopted and stay usable; the others are torn down and marked lost. Then
// everything the engine holds that no record knows is removed.
func (m *Manager) Recover(ctx context.Context) error {
	sbs, hs, err := m.repo.unfinished(ctx)
	if err != nil {
		return err
	}
	var keep []Handle
	for i, sb := range sbs {
		h := hs[i]
		log := m.log.With("sandbox_id", sb.ID)
		if sb.State == StateCreating {
			m.repo.setFinished(ctx, sb.ID, ReasonLost, ExitCodeLost, "the daemon stopped while the sandbox was being created", m.clock.Now())
			log.Warn("sandbox lost: the daemon stopped during its creation")
			continue
		}
		conn, err := m.adopt(ctx, h)
		if err != nil {
			log.Warn("sandbox lost", "err", err)
			m.prov.Destroy(ctx, h)
			m.repo.setFinished(ctx, sb.ID, ReasonLost, ExitCodeLost, "lost across a daemon restart: "+err.Error(), m.clock.Now())
			continue
		}
		if err := m.startLive(sb, h, conn); err != nil {
			conn.Close()
			m.prov.Destroy(ctx, h)
			m.repo.setFinished(ctx, sb.ID, ReasonLost, ExitCodeLost, err.Error(), m.clock.Now())
			continue
		}
		keep = append(keep, h)
		m.mu.Lock()
		l := m.live[sb.ID]
		m.mu.Unlock()
		if err := m.reconcileMounts(ctx, l); err != nil {
			log.Warn("live mounts not restored after the restart", "err", err)
		}
		log.Info("sandbox adopted")
	}
	if err := m.repo.pruneLiveMounts(ctx); err != nil {
		m.log.Warn("forget the live mounts of finished sandboxes", "err", err)
	}
	return m.prov.Sweep(ctx, keep)
}

func (m *Manager) adopt(ctx context.Context, h Handle) (AgentConn, error) {
	if h.ID == "" {
		return nil, fmt.Errorf("no engine record")
	}
	alive, err := m.prov.Adopt(ctx, h)
	if err != nil {
		return nil, err
	}
	if !alive || (h.Pid > 0 && !procAlive(h.Pid, h.PidStart)) {
		return nil, fmt.Errorf("its engine container no longer runs")
	}
	conn, err := m.agents.Dial(h.AgentAddr, h.AgentToken)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.WaitReady(rctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("its agent does not answer: %w", err)
	}
	return conn, nil
}
