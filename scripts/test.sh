#!/usr/bin/env bash
# The whole test suite; what CI runs (.ci/run).
#   1. scripts/deps.sh and scripts/build.sh (end-to-end tests use bin/)
#   2. go vet ./...
#   3. go test -count=1 -timeout 25m ./...   (SANDBOXD_BIN_DIR=$PWD/bin), output
#      also written to $SANDBOXD_TEST_LOG (default bin/go-test.log); then the
#      image store's tests again with layers stored as trees (SANDBOXD_TEST_LAYERS=tree)
#   4. a leak check: anything the tests left behind (runsc containers, network
#      namespaces, links, iptables chains, mounts, cgroups, processes) fails the
#      run. Things that were already there before the tests are reported but
#      not counted.
# Arguments, if any, replace ./... (e.g. scripts/test.sh -run TestX ./internal/store).
# Exits non-zero if vet or a test fails or something leaked.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
cd "$REPO_ROOT"
start=$SECONDS

"$REPO_ROOT/scripts/deps.sh"
"$REPO_ROOT/scripts/build.sh"

export SANDBOXD_BIN_DIR="$REPO_ROOT/bin"
TEST_LOG="${SANDBOXD_TEST_LOG:-$REPO_ROOT/bin/go-test.log}"
raise_nofile

# ------------------------------------------------------------- leak check
# snapshot prints one line per thing that a test could leave behind:
# "KIND<TAB>IDENTITY". Comparing a snapshot taken before the tests with one
# taken after gives what the tests leaked.
runsc_roots() {
  # The default root (and the one runsc picks under XDG_RUNTIME_DIR), plus any
  # directory under /tmp holding runsc state files (<cid>_sandbox:<sid>.state)
  # or named like a runsc root.
  {
    echo /var/run/runsc
    [ -n "${XDG_RUNTIME_DIR:-}" ] && echo "$XDG_RUNTIME_DIR/runsc"
    find /tmp -maxdepth 7 \( -name rootfs -o -name layers -o -name blobs -o -name proc -o -name sys \) -prune \
      -o -type f -name '*_sandbox:*.state' -printf '%h\n' 2>/dev/null
    find /tmp -maxdepth 6 -type d \( -name runsc -o -name 'runsc-root*' -o -name 'runsc_root*' \) -print 2>/dev/null
    for d in /tmp/sandboxd-test* /tmp/sandboxd-e2e* /var/lib/sandboxd /var/lib/sandboxd-*; do
      [ -d "$d" ] || continue
      find "$d" -maxdepth 3 -type d \( -name runsc -o -name 'runsc-root*' -o -name 'runsc_root*' -o -name 'runsc-state*' \) -print 2>/dev/null
    done
  } | sort -u
}

snapshot() {
  local r id line name
  # runsc containers (created, running or stopped but never deleted).
  if command -v runsc >/dev/null 2>&1; then
    runsc list -quiet 2>/dev/null | sed '/^$/d; s/^/runsc\tdefault-root:/' || true
    while IFS= read -r r; do
      [ -d "$r" ] || continue
      runsc --root "$r" list -quiet 2>/dev/null | sed "/^\$/d; s|^|runsc\t$r:|" || true
    done < <(runsc_roots)
  fi
  # network namespaces and host links (veths) named sbx*/sbt*.
  ip netns list 2>/dev/null | awk '$1 ~ /^sb[xt]/ {print "netns\t" $1}' || true
  ip -o link show 2>/dev/null | awk -F': ' '{n=$2; sub(/@.*/, "", n); if (n ~ /^sb[xt]/) print "link\t" n}' || true
  # iptables chains SANDBOXD-* and rules that jump to them or name sbx/sbt links.
  if command -v iptables >/dev/null 2>&1; then
    for t in filter nat mangle raw; do
      iptables -w 5 -t "$t" -S 2>/dev/null \
        | grep -E -- '(-N SANDBOXD|-j SANDBOXD|-[io] sb[xt]|sandboxd)' \
        | sed "s/^/iptables\t$t: /" || true
    done
  fi
  # mounts: anything mounted under /tmp or a sandboxd data dir, overlays
  # anywhere with sandboxd in their options, namespace files named sbx*/sbt*.
  awk '{
      mp=$2; gsub(/\\040/, " ", mp)
      if (mp ~ /^\/tmp\// || mp ~ /\/sandboxd/ || ($3 == "overlay" && $4 ~ /sandboxd/) || ($3 == "nsfs" && mp ~ /\/sb[xt][^\/]*$/))
        print "mount\t" $3 " " mp
    }' /proc/mounts 2>/dev/null | sort -u || true
  # cgroups left by runsc or the daemon (cgroup v1 hierarchies and v2).
  for r in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -d "$r" ] || continue
    for d in "$r"/sandboxd* "$r"/sbx-* "$r"/sbt-*; do
      [ -d "$d" ] || continue
      printf 'cgroup\t%s\n' "$d"
      find "$d" -mindepth 1 -maxdepth 2 -type d -printf 'cgroup\t%p\n' 2>/dev/null || true
    done
  done
  # processes: runsc (any subcommand), its sandbox and gofer, sandboxd serve.
  ps -eo pid=,args= 2>/dev/null | awk '{
      a=$2; sub(/.*\//, "", a)
      if (a == "runsc" || a == "runsc-sandbox" || a == "runsc-gofer" || (a == "sandboxd" && $3 == "serve"))
        { line=$0; sub(/^ +/, "", line); print "process\t" line }
    }' || true
}

leaks_now() { snapshot | sort -u >"$1"; }

BASELINE="$(mktemp /tmp/sandboxd-leaks-before.XXXXXX)"
AFTER="$(mktemp /tmp/sandboxd-leaks-after.XXXXXX)"
trap 'rm -f "$BASELINE" "$AFTER"' EXIT
leaks_now "$BASELINE"

# ------------------------------------------------------------------ vet
log "go vet ./..."
if ! go vet ./...; then
  log "FAIL: go vet found problems"
  exit 1
fi

# ------------------------------------------------------------------ test
[ $# -gt 0 ] || set -- ./...
mkdir -p "$(dirname "$TEST_LOG")"
log "go test -count=1 -timeout 25m $* (log: $TEST_LOG)"
# go test writes to the log FILE and tail streams it: a sandbox or daemon that a
# test leaks may hold the output descriptor open, and with a pipe (| tee) this
# script would then wait for it forever.
: >"$TEST_LOG"
go test -count=1 -timeout 25m "$@" >"$TEST_LOG" 2>&1 &
go_pid=$!
tail -n +1 -s 0.5 -f --pid="$go_pid" "$TEST_LOG" || true
test_rc=0
wait "$go_pid" || test_rc=$?
# The image store's tests once more with layers stored as trees of files (what
# kernels without file-backed EROFS mounts get; the run above stores images).
if [ "$*" = "./..." ]; then
  log "go test -count=1 ./internal/image/ with SANDBOXD_TEST_LAYERS=tree"
  if ! SANDBOXD_TEST_LAYERS=tree go test -count=1 -timeout 10m ./internal/image/ >>"$TEST_LOG" 2>&1; then
    tail -n 60 "$TEST_LOG"
    test_rc=1
  fi
fi

# -------------------------------------------------------------- leaks
# Give processes of the last test a moment to finish exiting.
leaks_now "$AFTER"
if [ -n "$(comm -13 "$BASELINE" "$AFTER")" ]; then
  sleep 3
  leaks_now "$AFTER"
fi
leaked="$(comm -13 "$BASELINE" "$AFTER")"
preexisting="$(comm -12 "$BASELINE" "$AFTER")"
nleaks=0
if [ -n "$leaked" ]; then
  nleaks=$(printf '%s\n' "$leaked" | wc -l)
  echo "leak check: the tests left behind $nleaks thing(s):"
  printf '%s\n' "$leaked" | sed 's/^/  LEAK /; s/\t/ /'
  case "$leaked" in *null-netns*)
    echo "  hint: runsc pins ROOT/null-netns (a bind mount) in every runsc root it uses;" \
         "unmount it (MNT_DETACH, until it fails) before removing the root" ;;
  esac
fi
if [ -n "$preexisting" ]; then
  echo "leak check: present before the tests too (not counted):"
  printf '%s\n' "$preexisting" | sed 's/^/  note /; s/\t/ /'
fi

elapsed=$((SECONDS - start))
if [ "$test_rc" -eq 0 ] && [ "$nleaks" -eq 0 ]; then
  echo "test.sh: PASS (go test ok, no leaks, ${elapsed}s)"
  exit 0
fi
reasons=()
[ "$test_rc" -ne 0 ] && reasons+=("go test exited $test_rc")
[ "$nleaks" -ne 0 ] && reasons+=("$nleaks leak(s)")
echo "test.sh: FAIL ($(IFS=,; echo "${reasons[*]}" | sed 's/,/, /g'), ${elapsed}s)"
[ "$test_rc" -ne 0 ] && exit "$test_rc"
exit 1
