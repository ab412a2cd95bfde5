#!/usr/bin/env bash
# Stops the sandboxd started by scripts/up.sh: SIGTERM to the pid in
# $SANDBOXD_DATA_DIR/sandboxd.pid (default /var/lib/sandboxd), then waits for it
# to exit (SANDBOXD_DOWN_TIMEOUT seconds, default 60; then SIGKILL).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
DIR="$SANDBOXD_DATA_DIR"
PIDFILE="$DIR/sandboxd.pid"
WAIT_SECS="${SANDBOXD_DOWN_TIMEOUT:-60}"

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -z "$pid" ]; then
  log "sandboxd is not running (no $PIDFILE)"
  exit 0
fi
if ! kill -0 "$pid" 2>/dev/null || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q sandboxd; then
  log "sandboxd is not running (stale $PIDFILE: pid $pid is gone)"
  rm -f "$PIDFILE"
  exit 0
fi

log "stopping sandboxd (pid $pid)"
kill -TERM "$pid"
deadline=$((SECONDS + WAIT_SECS))
while kill -0 "$pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    warn "sandboxd (pid $pid) still running after ${WAIT_SECS}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
    break
  fi
  sleep 0.2
done
rm -f "$PIDFILE"
log "sandboxd stopped"
