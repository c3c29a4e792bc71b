#!/usr/bin/env bash
# The GPU check (issue 20; docs/gpu.md). On a machine with one NVIDIA GPU whose image has
# PyTorch and Triton but no network: install this working tree with the carried wheels
# (ops/gpu/wheels, from ops/gpu/fetch_wheels.sh), then run every step under its time bound.
# JSON and logs go to $OUT (default out/gpu-check); the summary table is printed last.
#
#   bash ops/gpu/check.sh                  # the check (on the GPU machine)
#   bash ops/gpu/check.sh --cpu-rehearsal  # here: every step's plumbing on the CPU, no install
#   bash ops/gpu/check.sh --no-install     # the check, with the project already installed
# Other arguments go to the driver: --steps env,pinned  --budget-s 270  (see --help there).
# PYTHON picks the interpreter (default: the first of python3, python that imports torch;
# .venv/bin/python for the rehearsal).
set -uo pipefail
cd "$(dirname "$0")/../.."

OUT="${OUT:-out/gpu-check}"
WHEELS="${ASYMCACHE_GPU_WHEELS:-ops/gpu/wheels}"
mode=gpu
install=1
args=()
for arg in "$@"; do
    case "$arg" in
        --cpu-rehearsal) mode=cpu; install=0 ;;
        --no-install) install=0 ;;
        *) args+=("$arg") ;;
    esac
done
if [ -z "${PYTHON:-}" ]; then  # the rehearsal: the virtualenv; the check: the image's torch
    if [ "$mode" = cpu ] && [ -x .venv/bin/python ]; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
        for candidate in python3 python; do
            if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
                PYTHON="$candidate"
                break
            fi
        done
    fi
fi
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

write_install_json() {  # status seconds error: the driver shows it as the first step
    local error="null"
    [ -n "$3" ] && error="\"$3\""
    printf '{"name": "install", "mode": "%s", "status": "%s", "seconds": %s, "figures": {"wheels_dir": "%s", "log": "install.log"}, "goals": [], "skipped": [], "error": %s}\n' \
        "$mode" "$1" "$2" "$WHEELS" "$error" > "$OUT/install.json"
}

install_project() {
    local start=$SECONDS
    echo "[check] installing the working tree with the wheels in $WHEELS (log: $OUT/install.log)"
    if ! "$PYTHON" ops/gpu/wheels.py check-dir "$WHEELS" >> "$OUT/install.log" 2>&1; then
        tail -3 "$OUT/install.log"
        write_install_json failed $((SECONDS - start)) "wheels missing: run ops/gpu/fetch_wheels.sh where PyPI is reachable, and carry $WHEELS"
        return 1
    fi
    # The image's PyTorch and Triton stay as they are: pinned to the installed versions.
    "$PYTHON" -c 'import importlib.metadata as m
for name in ("torch", "triton"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass' > "$OUT/image-pins.txt"
    local extra=()
    if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
        extra+=(--break-system-packages)  # an image's system Python marked externally managed
    fi
    if [ "$("$PYTHON" -c 'import os, site, sys, sysconfig; print(int(sys.prefix == sys.base_prefix and not os.access(sysconfig.get_paths()["purelib"], os.W_OK)))')" = 1 ]; then
        extra+=(--user)
    fi
    if ! timeout 120 "$PYTHON" -m pip install --no-index --find-links "$WHEELS" ${extra[@]+"${extra[@]}"} \
            -c "$OUT/image-pins.txt" -r ops/gpu/requirements.txt -e . >> "$OUT/install.log" 2>&1; then
        tail -20 "$OUT/install.log"
        write_install_json failed $((SECONDS - start)) "pip install failed: see install.log"
        return 1
    fi
    write_install_json ok $((SECONDS - start)) ""
    echo "[check] installed in $((SECONDS - start)) s"
}

if [ "$install" = 1 ]; then
    rm -f "$OUT/install.json" "$OUT/install.log"
    install_project || { echo "[check] the install failed: no step can run" >&2; exit 1; }
fi
exec "$PYTHON" -m asymcache.ops.gpu.check --out "$OUT" --mode "$mode" ${args[@]+"${args[@]}"}
