package agent

import (
	"log"
	"log/slog"
)

// newErrorLog adapts l for net/http's error log.
func newErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}
