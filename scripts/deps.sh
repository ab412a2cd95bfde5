#!/usr/bin/env bash
# Installs what sandboxd needs on a Debian 12 host, and only what is missing:
#   - Debian packages: busybox-static iproute2 iptables debootstrap (and make)
#   - runsc (gVisor), built statically from the pinned version with the Go
#     toolchain, with its seccomp programs precompiled as gVisor's own build
#     does (scripts/seccompgen.go) and the fixes in scripts/runsc-patches/
#     applied, installed as /usr/local/bin/runsc; the pin
#     is recorded in /usr/local/lib/sandboxd/runsc.pin (runsc --version says
#     VERSION_MISSING, so the stamp is the only record of what was built)
#   - kernel limits raised for about a thousand sandboxes (sysctl)
# Idempotent and silent when everything is already there; prints one line per
# thing it installs or changes. Must run as root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root

mkdir -p "$(dirname "$RUNSC_STAMP")"
# Serialise concurrent runs (make up and make test at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$(dirname "$RUNSC_STAMP")/deps.lock"
  flock 9
fi

TMP_LOG="$(mktemp /tmp/sandboxd-deps.XXXXXX.log)"
GOBIN_TMP=""
cleanup() {
  rm -f "$TMP_LOG"
  [ -n "$GOBIN_TMP" ] && rm -rf "$GOBIN_TMP"
  return 0
}
trap cleanup EXIT

# ---------------------------------------------------------------- packages
pkg_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

want=(busybox-static iproute2 iptables debootstrap debian-archive-keyring)
command -v make >/dev/null 2>&1 || want+=(make)
missing=()
for p in "${want[@]}"; do
  pkg_installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get update -qq >"$TMP_LOG" 2>&1; then
    cat "$TMP_LOG" >&2
    die "apt-get update failed"
  fi
  if ! apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >"$TMP_LOG" 2>&1; then
    cat "$TMP_LOG" >&2
    die "apt-get install ${missing[*]} failed"
  fi
  for p in "${missing[@]}"; do
    pkg_installed "$p" || die "package $p is still not installed"
    log "installed $p ($(dpkg-query -W -f='${Version}' "$p"))"
  done
fi

# ------------------------------------------------------------------- runsc
runsc_fingerprint() { stat -c '%s:%Y' "$RUNSC_BIN" 2>/dev/null || echo none; }

runsc_current() {
  [ -x "$RUNSC_BIN" ] && [ -f "$RUNSC_STAMP" ] || return 1
  local pin fp
  pin="$(sed -n 's/^pin=//p' "$RUNSC_STAMP")"
  fp="$(sed -n 's/^binary=//p' "$RUNSC_STAMP")"
  [ "$pin" = "$RUNSC_PIN" ] && [ "$fp" = "$(runsc_fingerprint)" ] &&
    grep -qx "build=$RUNSC_BUILD" "$RUNSC_STAMP"
}

# What the runsc build does beyond the module's own source: the seccomp
# programs of the sentry and the gofer, precompiled (a runsc built by a plain
# `go install` compiles them at every sandbox start: 20-40 ms of each create
# and restore, far more on a busy host), and the patches of
# scripts/runsc-patches/ (each says why). Bump when the build changes.
RUNSC_BUILD="seccomp-precompiled-1+patches-3"

if ! runsc_current; then
  require_go
  if [ ! -x "$RUNSC_BIN" ]; then
    why="$RUNSC_BIN is missing"
  elif [ ! -f "$RUNSC_STAMP" ]; then
    why="$RUNSC_BIN has no stamp, so its version is unknown"
  elif [ "$(sed -n 's/^pin=//p' "$RUNSC_STAMP")" != "$RUNSC_PIN" ]; then
    why="$RUNSC_BIN was built from $(sed -n 's/^pin=//p' "$RUNSC_STAMP")"
  elif ! grep -qx "build=$RUNSC_BUILD" "$RUNSC_STAMP"; then
    why="$RUNSC_BIN was built another way than $RUNSC_BUILD"
  else
    why="$RUNSC_BIN was replaced since it was built"
  fi
  log "building runsc $RUNSC_PIN statically ($why; 2-5 minutes)"
  GOBIN_TMP="$(mktemp -d /tmp/sandboxd-runsc-build.XXXXXX)"
  # The pinned module from the module proxy, copied to a writable place
  # outside the repository (its go.mod plays no part; the module cache is
  # read-only, and go refuses overlays of it); the patches are applied there
  # and the generator rewrites the two filter_precompiled.go files, then
  # runsc is built from the copy exactly as `go install
  # gvisor.dev/gvisor/runsc@PIN` would build it.
  scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  gen="$scripts/seccompgen.go"
  if ! (set -e
        cd "$GOBIN_TMP"
        dir="$(env GOFLAGS= go mod download -json "gvisor.dev/gvisor@$RUNSC_PIN" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        [ -d "$dir" ] || { echo "go mod download gave no module dir"; exit 1; }
        cp -r "$dir" src
        chmod -R u+w src
        mkdir src/sandboxd-seccompgen
        cp "$gen" src/sandboxd-seccompgen/main.go
        cd src
        for p in "$scripts"/runsc-patches/*.patch; do
          echo "applying $(basename "$p")"
          git apply -p1 "$p"
        done
        env GOFLAGS= CGO_ENABLED=0 go run ./sandboxd-seccompgen/main.go .
        env GOFLAGS= CGO_ENABLED=0 go build -o "$GOBIN_TMP/runsc" ./runsc) >"$TMP_LOG" 2>&1; then
    cat "$TMP_LOG" >&2
    die "building runsc $RUNSC_PIN failed"
  fi
  [ -x "$GOBIN_TMP/runsc" ] || die "the runsc build left no binary"
  is_static "$GOBIN_TMP/runsc" || die "the runsc build is not static (a dynamic runsc cannot start sandboxes)"
  install -m 0755 "$GOBIN_TMP/runsc" "$RUNSC_BIN.new"
  mv -f "$RUNSC_BIN.new" "$RUNSC_BIN"
  printf 'pin=%s\nbinary=%s\nbuild=%s\nbuilt=%s\n' "$RUNSC_PIN" "$(runsc_fingerprint)" \
    "$RUNSC_BUILD" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$RUNSC_STAMP"
  log "installed $RUNSC_BIN (gvisor.dev/gvisor $RUNSC_PIN, static, stamp $RUNSC_STAMP)"
fi

# ----------------------------------------------------------------- sysctls
# key=minimum. Only raised, never lowered. Order matters for gc_thresh
# (thresh1 <= thresh2 <= thresh3 at all times).
SYSCTLS=(
  kernel.pid_max=4194304                     # every sandbox costs ~20 host threads
  kernel.threads-max=4194304
  fs.inotify.max_user_instances=8192
  fs.inotify.max_user_watches=1048576
  fs.file-max=4194304
  fs.nr_open=1048576
  vm.max_map_count=1048576                   # the Sentry maps a lot
  net.ipv4.neigh.default.gc_thresh3=32768    # one neighbour per sandbox veth
  net.ipv4.neigh.default.gc_thresh2=16384
  net.ipv4.neigh.default.gc_thresh1=8192
)

conf=""
for kv in "${SYSCTLS[@]}"; do
  key="${kv%%=*}"; val="${kv#*=}"
  conf+="$key = $val"$'\n'
  cur="$(sysctl -n "$key" 2>/dev/null)" || continue   # not on this kernel
  case "$cur" in ''|*[!0-9]*) continue ;; esac
  [ "$cur" -ge "$val" ] && continue
  if sysctl -q -w "$key=$val" >/dev/null 2>&1; then
    log "raised $key from $cur to $val"
  else
    warn "could not raise $key from $cur to $val (not permitted here); continuing"
  fi
done

# Keep them across reboots.
SYSCTL_CONF=/etc/sysctl.d/90-sandboxd.conf
if [ -d /etc/sysctl.d ]; then
  want_conf="# Written by sandboxd's scripts/deps.sh: limits for ~1000 sandboxes."$'\n'"$conf"
  if [ "$(cat "$SYSCTL_CONF" 2>/dev/null)"$'\n' != "$want_conf" ]; then
    printf '%s' "$want_conf" >"$SYSCTL_CONF" 2>/dev/null \
      && log "installed $SYSCTL_CONF" \
      || warn "could not write $SYSCTL_CONF"
  fi
fi

exit 0
