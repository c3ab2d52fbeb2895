#!/usr/bin/env bash
# Builds the Python processing module into a WebAssembly component with
# componentize-py (from PyPI, into a virtualenv under target/):
#
#   bash plugins/examples/python-processing/build.sh [OUT.wasm]
#
# OUT defaults to target/plugins/python-processing.wasm. Needs python3 with
# venv; nothing else (no Rust, no wasm target).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$root/target/plugins/python-processing.wasm}
venv=$root/target/componentize-py
version=0.25.1

if [ ! -x "$venv/bin/componentize-py" ] || ! "$venv/bin/componentize-py" --version | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
# Up to date: newer than every source and the WIT it is built against.
if [ -f "$out" ] && [ -z "$(find "$here" "$root/wit" -newer "$out" -type f -not -path "*/__pycache__/*" -print -quit)" ]; then
    echo "up to date: $out"
    exit 0
fi
mkdir -p "$(dirname "$out")"
"$venv/bin/componentize-py" -d "$root/wit" -w processing-module \
    componentize -p "$here" app -o "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out ($(wc -c <"$out") bytes)"
