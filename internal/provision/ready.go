package provision

import (
	"context"
	"os"
	"time"
)

// When runsc run returns, the agent inside is still starting (about 50 ms
// here: a 14 MB Go binary paging in through the gofer). The agent writes its
// first line to its stderr, the sandbox's init.log, once it listens ("agent
// serving"; cmd/sandbox-agent), or an error if it fails to start. So a new
// sandbox's agent is dialled only after that line, or after initOutputWait
// at most: dialling earlier only collects refusals, which cost the sentry
// CPU the agent needs (a dial every 0.5 ms made it about 30 ms slower to
// listen), and the client's backoff (up to 20 ms between tries) overshoots
// the moment it listens by about 10 ms. Measured here, interleaved, 35
// creates each: the agent answered 86 ms (p50) after runsc returned with the
// backoff alone; with this wait, its first line came after 40-60 ms and its
// first answer 17 ms later (create p50 434 ms against 461 ms).
//
// A restored agent writes nothing (it was serving when checkpointed): no
// wait there.

const (
	// initOutputWait bounds the wait; the agent's own readiness check
	// (sandbox.Manager's WaitReady) follows it in every case.
	initOutputWait = time.Second
	initOutputPoll = time.Millisecond
)

// waitInitOutput returns when the file at path is not empty, when limit has
// passed or when ctx ends, and says whether output came. A missing file
// counts as empty.
func waitInitOutput(ctx context.Context, path string, limit time.Duration) bool {
	t := time.NewTicker(initOutputPoll)
	defer t.Stop()
	deadline := time.Now().Add(limit)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
