#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running sandboxd:
#   1. scripts/deps.sh   installs what is missing (Debian packages, pinned runsc)
#   2. scripts/build.sh  builds bin/sandboxd, bin/sbx, bin/sandbox-agent
#   3. sandboxd prepare  builds/imports the base images (busybox, debian-slim)
#   4. sandboxd serve    started in the background (nohup), unless already up
#   5. waits until `sbx ls` answers, then prints how to use it
# Environment: SANDBOXD_DATA_DIR (default /var/lib/sandboxd),
#              SANDBOXD_LISTEN   (default 127.0.0.1:7423),
#              SANDBOXD_WARM_POOL (default size=2: two sandboxes of the default
#                image and limits booted ahead; see --warm-pool; empty: none).
# Stop it with scripts/down.sh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
cd "$REPO_ROOT"

DIR="$SANDBOXD_DATA_DIR"
ADDR="http://$SANDBOXD_LISTEN"
PIDFILE="$DIR/sandboxd.pid"
LOGFILE="$DIR/sandboxd.log"
WAIT_SECS="${SANDBOXD_UP_TIMEOUT:-60}"

usage() {
  cat <<USAGE

sandboxd is running at $ADDR (data in $DIR, log $LOGFILE).
To use it from this shell:

  export SANDBOXD_ADDR=$ADDR
  export SANDBOXD_TOKEN=\$(cat $DIR/token)
  export PATH=$REPO_ROOT/bin:\$PATH

First commands to try:

  id=\$(sbx create)        # debian-slim; taken from the warm pool when one is ready
  sbx exec \$id -- cat /etc/debian_version
  sbx ls
  sbx terminate \$id

Stop it with: $REPO_ROOT/scripts/down.sh
USAGE
}

# pid_alive PID: the process exists and is a sandboxd (guards against pid reuse).
pid_alive() {
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'sandboxd'
}

# answers: the API answers sbx ls with our token.
answers() {
  local tok=""
  [ -r "$DIR/token" ] && tok="$(cat "$DIR/token")"
  SANDBOXD_ADDR="$ADDR" SANDBOXD_TOKEN="$tok" bin/sbx ls >/dev/null 2>&1
}

"$REPO_ROOT/scripts/deps.sh"
"$REPO_ROOT/scripts/build.sh"

mkdir -p "$DIR"
chmod 0711 "$DIR"

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if pid_alive "$pid"; then
  log "sandboxd is already running (pid $pid); not starting another (scripts/down.sh stops it)"
  usage
  exit 0
fi
if answers; then
  log "a sandboxd already answers at $ADDR (not started by this script: no live $PIDFILE)"
  usage
  exit 0
fi
rm -f "$PIDFILE"

log "preparing base images in $DIR (busybox, debian-slim; the first run takes a minute or two)"
bin/sandboxd prepare --data-dir "$DIR"

log "starting sandboxd serve --data-dir $DIR --listen $SANDBOXD_LISTEN (log $LOGFILE)"
raise_nofile
# setsid: its own session, so a Ctrl-C in this terminal does not reach it.
pool_args=()
[ -n "${SANDBOXD_WARM_POOL-size=2}" ] && pool_args=(--warm-pool "${SANDBOXD_WARM_POOL-size=2}")
nohup setsid "$REPO_ROOT/bin/sandboxd" serve --data-dir "$DIR" --listen "$SANDBOXD_LISTEN" "${pool_args[@]}" \
  </dev/null >>"$LOGFILE" 2>&1 &
pid=$!
echo "$pid" >"$PIDFILE"

deadline=$((SECONDS + WAIT_SECS))
until answers; do
  if ! kill -0 "$pid" 2>/dev/null; then
    warn "sandboxd exited during startup; the end of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2 || true
    rm -f "$PIDFILE"
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    warn "sandboxd (pid $pid) did not answer at $ADDR within ${WAIT_SECS}s; the end of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2 || true
    warn "it is still running; scripts/down.sh stops it"
    exit 1
  fi
  sleep 0.5
done

log "sandboxd is up (pid $pid)"
usage
