#!/usr/bin/env bash
# Installs what is missing (deps.sh), builds sandboxd's binaries (build.sh)
# and the benchmark program (./bench, into bin/sandboxd-bench), then runs it;
# arguments go to it, e.g. `scripts/bench.sh -n 40 -only core -json out.json`.
# The benchmark starts its own daemon on a temporary data directory and
# removes everything it made when it ends. Must run as root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
cd "$REPO_ROOT"
"$REPO_ROOT/scripts/deps.sh"
"$REPO_ROOT/scripts/build.sh"
CGO_ENABLED=0 go build -trimpath -o bin/sandboxd-bench ./bench
exec "$REPO_ROOT/bin/sandboxd-bench" -bin "$REPO_ROOT/bin" "$@"
