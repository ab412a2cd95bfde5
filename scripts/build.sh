#!/usr/bin/env bash
# Builds sandboxd's binaries into bin/:
#   bin/sandboxd       the daemon              (./cmd/sandboxd)
#   bin/sbx            the command-line client (./cmd/sbx)
#   bin/sandbox-agent  the in-sandbox agent    (./cmd/sandbox-agent), static
# All with CGO_ENABLED=0 and -trimpath. Extra arguments go to `go build`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go
cd "$REPO_ROOT"
mkdir -p bin

export CGO_ENABLED=0
# One invocation builds the three in parallel and shares the work; with -o DIR/
# each main package lands in DIR under its directory's name.
go build -trimpath "$@" -o bin/ ./cmd/sandboxd ./cmd/sbx ./cmd/sandbox-agent

for b in sandboxd sbx sandbox-agent; do
  [ -x "bin/$b" ] || die "bin/$b was not built"
done

# The agent runs inside gVisor sandboxes whose root may hold no libc at all
# (busybox-static, scratch images): it must be a static binary.
is_static bin/sandbox-agent || die "bin/sandbox-agent is not statically linked"
log "built bin/sandboxd bin/sbx bin/sandbox-agent (static)"
