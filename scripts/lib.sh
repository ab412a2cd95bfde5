# shellcheck shell=bash
# Common helpers for the scripts in this directory. Source it; do not run it.

# Repository root (this file lives in scripts/).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Go lives in /usr/local/go on the project's machines; make sure it is found
# even when the caller's PATH does not hold it (CI, sudo, cron).
case ":$PATH:" in
  *:/usr/local/go/bin:*) ;;
  *) [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH" ;;
esac
# runsc, ip, iptables, sysctl live in these.
for _d in /usr/local/sbin /usr/local/bin /usr/sbin /sbin; do
  case ":$PATH:" in *":$_d:"*) ;; *) PATH="$PATH:$_d" ;; esac
done
unset _d
export PATH
# Go needs a cache directory; without HOME it has none.
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then
  export HOME=/root
fi

# The gVisor version sandboxd is built and tested against.
RUNSC_PIN="v0.0.0-20260905035102-160fafc42237"
RUNSC_BIN="/usr/local/bin/runsc"
RUNSC_STAMP="/usr/local/lib/sandboxd/runsc.pin"

SANDBOXD_DATA_DIR="${SANDBOXD_DATA_DIR:-/var/lib/sandboxd}"
SANDBOXD_LISTEN="${SANDBOXD_LISTEN:-127.0.0.1:7423}"

log()  { printf '%s: %s\n' "${0##*/}" "$*"; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die()  { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (sandboxd drives runsc, network namespaces, iptables and mounts)"
}

require_go() {
  command -v go >/dev/null 2>&1 || die "go not found (expected in /usr/local/go/bin)"
}

# is_static FILE: true if FILE is a statically linked executable.
is_static() {
  local f="$1" out
  if command -v file >/dev/null 2>&1; then
    out="$(file -L "$f" 2>/dev/null)"
    case "$out" in
      *"statically linked"*|*"static-pie linked"*) return 0 ;;
      *"dynamically linked"*) return 1 ;;
    esac
  fi
  # ldd exits non-zero ("not a dynamic executable") for a static binary.
  if out="$(ldd "$f" 2>&1)"; then
    case "$out" in *"statically linked"*) return 0 ;; esac
    return 1
  fi
  return 0
}

# Raise the soft limit on open files as far as the hard limit allows
# (a thousand sandboxes hold many descriptors in the daemon).
raise_nofile() {
  local hard
  hard="$(ulimit -Hn)"
  ulimit -Sn "$hard" 2>/dev/null || true
}
