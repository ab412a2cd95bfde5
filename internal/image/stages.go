package image

import (
	"context"
	"log/slog"
	"time"
)

// stages times the steps of one layer's making, for one debug log line per
// layer: where a snapshot's time goes (waiting for the tar, extracting,
// hashing, flushing, recording). Not safe for concurrent use.
type stages struct {
	clock Clock
	last  time.Time
	start time.Time
	attrs []any
}

func (s *Store) newStages() *stages {
	now := s.clock.Now()
	return &stages{clock: s.clock, last: now, start: now}
}

// mark records the time since the previous mark (or the start) as step name.
func (t *stages) mark(name string) {
	if t == nil {
		return
	}
	now := t.clock.Now()
	t.attrs = append(t.attrs, name, now.Sub(t.last).Round(time.Microsecond))
	t.last = now
}

// add records a value measured elsewhere (a step that ran beside others).
func (t *stages) add(name string, v any) {
	if t == nil {
		return
	}
	t.attrs = append(t.attrs, name, v)
}

// log writes the line, with the total time, at debug level.
func (t *stages) log(ctx context.Context, l *slog.Logger, msg string, attrs ...any) {
	if t == nil || l == nil {
		return
	}
	all := append(append(attrs, t.attrs...), "total", t.clock.Now().Sub(t.start).Round(time.Microsecond))
	l.Log(ctx, slog.LevelDebug, msg, all...)
}
