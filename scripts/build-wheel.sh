#!/bin/sh
# Build dist/netmon-<version>-py3-none-any.whl. clang compiles the BPF object inside the
# wheel build (hatch_build.py runs the Makefile's recipe) and the wheel ships it, so the
# host that installs it needs no compiler. Used by `make wheel`, by Dockerfile.build and
# by the tests, so all three build the same wheel the same way.
#
#   scripts/build-wheel.sh [OUTDIR]      (default: dist)
set -eu
cd "$(dirname "$0")/.."
out=${1:-dist}
python=${PYTHON:-python3}

# Reproducible: file times in the wheel come from the last commit, not the clock.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    export SOURCE_DATE_EPOCH
fi

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$python" -m venv "$tools"
"$tools/bin/pip" install -q --disable-pip-version-check build
# A stale object must not slip in: the build compiles it afresh.
rm -f netmon/_bpf/xdp_monitor.bpf.o
"$tools/bin/python" -m build --wheel --outdir "$out" .
ls "$out"/netmon-*-py3-none-any.whl
