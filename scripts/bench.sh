#!/usr/bin/env bash
# Builds, then runs the benchmark program (./bench); arguments go to it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$REPO_ROOT"
"$REPO_ROOT/scripts/build.sh"
export SANDBOXD_BIN_DIR="$REPO_ROOT/bin"
exec go run ./bench "$@"
