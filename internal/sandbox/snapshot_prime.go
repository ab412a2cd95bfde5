package sandbox

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// primeTimeout bounds the priming read: it is an optimisation, never a
// reason for a snapshot to wait or fail.
const primeTimeout = 2 * time.Second

// primeMin is the guest memory below which priming is skipped: the read
// costs 25-85 ms (more while the agent serves execs) and at 16 MiB saved
// nothing measurable (calls of 276 ms with it, 261 ms without, medians of
// 15 each, alternated); the scan it shortens costs about 1.6 ms per MiB.
const primeMin = 64 << 20

// MemoryMeter is an engine's optional ability to tell how much memory a
// sandbox's guest holds.
type MemoryMeter interface {
	GuestMemory(ctx context.Context, h Handle) (int64, error)
}

// primeMemoryScan makes the engine learn, while the sandbox still runs, which
// of its memory pages are committed, so that the checkpoint that follows has
// less to scan while the sandbox is frozen.
//
// gVisor's save reads every page of its memory file not yet known to be
// committed, to leave zero pages out, and does it with the kernel paused: at
// 256 MiB of touched memory that scan is most of the frozen time. Reading
// /proc/meminfo inside the sandbox makes the sentry update its usage first
// (pgalloc MemoryFile.UpdateUsage: a mincore pass that marks committed
// pages known-committed, without reading them), and the save then skips
// those pages. Measured with raw runsc on a 256 MiB sandbox: checkpoint
// 672-842 ms without, 473-525 ms after a 70-85 ms read. The agent serves the
// read (its file API), so no process is started and any image works.
//
// What priming cannot spare: pages the sentry allocated but the guest never
// touched (it allocates anonymous memory in large units; 12-22 MB of them in
// a 256 MiB sandbox here). They are not committed, so the save reads each,
// which commits it, finds it zero and decommits it: 130-250 ms of the
// frozen time here (runsc --debug: "save scanning took"), at every
// checkpoint, in parallel with the page writes (see runtime.CheckpointOpts).
//
// It is skipped when meter (nil: unknown) says the guest holds less than
// primeMin. Failures are logged and ignored: the checkpoint is correct
// either way.
func (m *Manager) primeMemoryScan(ctx context.Context, l *live, meter MemoryMeter, log *slog.Logger) {
	fa, ok := l.agent.(FileAgent)
	if !ok {
		return
	}
	if meter != nil {
		if n, err := meter.GuestMemory(ctx, l.handle); err == nil && n < primeMin {
			log.Debug("memory scan not primed: little memory", "guest_memory", n)
			return
		}
	}
	ctx, cancel := context.WithTimeout(ctx, primeTimeout)
	defer cancel()
	start := time.Now()
	s, err := fa.Files().ReadFile(ctx, connect.NewRequest(&agentv1.ReadFileRequest{Path: "/proc/meminfo", Length: 64 << 10}))
	if err == nil {
		for s.Receive() {
		}
		err = s.Err()
		s.Close()
	}
	if err != nil {
		log.Debug("priming the memory scan failed; the checkpoint will scan all", "err", err)
		return
	}
	log.Debug("memory scan primed", "took", time.Since(start))
}
