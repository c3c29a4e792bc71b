#!/usr/bin/env bash
# Downloads the wheels the GPU check installs on a machine without network (docs/gpu.md):
# everything in ops/gpu/requirements.txt and what it depends on, as CPython 3.12 manylinux x86_64
# wheels at the versions of .ci/constraints.txt, into ops/gpu/wheels/ (git-ignored; it travels
# with the working tree as a carried path, at most 64 MiB). Run it where PyPI is reachable.
#
#   bash ops/gpu/fetch_wheels.sh             # download, then check coverage and size
#   bash ops/gpu/fetch_wheels.sh --print     # print the pip command only (the rehearsal tests it)
#   options: --dest DIR (default ops/gpu/wheels), --python-version X.Y (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/../.."

dest=ops/gpu/wheels
py_version=3.12
print_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --print) print_only=1 ;;
        --dest) dest="$2"; shift ;;
        --python-version) py_version="$2"; shift ;;
        *) echo "usage: bash ops/gpu/fetch_wheels.sh [--print] [--dest DIR] [--python-version X.Y]" >&2
           exit 2 ;;
    esac
    shift
done

PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
LIMIT_MIB=64
# pip does not widen a manylinux_2_x platform to older ones by itself: name each glibc level
# wheels are published for, down to manylinux1 (manylinux2014 brings 2010 and 1).
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 \
           manylinux2014 manylinux_2_12 manylinux_2_5; do
    platforms+=(--platform "${tag}_x86_64")
done
# --isolated: this machine's pip configuration (local indexes, constraints) plays no part.
cmd=("$PY" -m pip download --isolated --disable-pip-version-check --only-binary=:all:
     --implementation cp --python-version "$py_version" --abi "cp${py_version/./}" --abi abi3
     --abi none "${platforms[@]}" -c .ci/constraints.txt -r ops/gpu/requirements.txt
     -d "$dest")

if [ "$print_only" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi

mkdir -p "$dest"
echo "[fetch] downloading into $dest (CPython $py_version, manylinux x86_64) ..."
"${cmd[@]}" -q
"$PY" ops/gpu/wheels.py check-dir "$dest"
bytes=$("$PY" -c "import pathlib,sys; print(sum(p.stat().st_size for p in pathlib.Path(sys.argv[1]).glob('*.whl')))" "$dest")
if [ "$bytes" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
    echo "[fetch] $dest holds $((bytes / 1048576)) MiB: over the ${LIMIT_MIB} MiB that travel with the tree" >&2
    exit 1
fi
echo "[fetch] $((bytes / 1048576)) MiB in $dest; carry it: run(..., carry=[\"$dest\"])"
