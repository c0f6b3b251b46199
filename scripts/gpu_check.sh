#!/usr/bin/env bash
# The device check of issue #17: on a GPU machine, from this repository alone, in under 8 minutes:
#   1. what the machine is (python, torch, the GPU);
#   2. what kd-sweep imports, installed where missing (below);
#   3. `pytest -m gpu tests/test_gpu.py`: the CUDA paths against the CPU path, eager mode, an unpacked or
#      uninterrupted run;
#   4. scripts/gpu_bench.py: the CUDA figures measured with `kd-sweep bench`'s own functions, each against
#      its target (kd-sweep >= 4x the plain loop, packed grid <= 0.5x, trials per GPU-hour at 1/2/4/8 per
#      GPU, CoSS Table 3 projected, exact k-NN 50k x 2048 <= 5 s), then compile false/true/reduce-overhead;
#   5. `kd-sweep bench` itself with the time left (its CPU section comes first and takes minutes, and its
#      orchestration section needs Ray: where either cuts it short, step 4 has the CUDA figures).
# Everything it prints goes to $OUT (default /tmp/gpu-check-out): gpu_check.log (all of it), env.txt,
# pytest.txt, pytest.xml, gpu_bench.txt, gpu_bench.json, bench.txt. Exit 0 when no step failed (a skip,
# said with its reason, is not a failure). Without a GPU it runs the same steps in seconds: the tests
# skip, gpu_bench.py says it skipped, `kd-sweep bench` is not run (GPU_CHECK_BENCH_ON_CPU=1 runs it).
#
# Installing, on the GPU machines this workplace lends (/work/.library/device/KINDS.md): nothing outside
# them can be reached (no PyPI); `python3` is CPython 3.12 with torch 2.11+cu130, torchvision, numpy,
# pandas, scikit-learn, matplotlib, pyyaml, typer, rich and pytest, but no pydantic, faiss, mlflow, ray or
# optuna. A virtual environment with torch is gigabytes; the device tool carries 64 MiB (`carry`, ignored
# paths only). So:
#   - where the modules are all importable (a developer's GPU box with the project installed): nothing
#     is installed;
#   - else, with wheels in build/gpu-wheels/ (made beforehand by scripts/gpu_wheels.sh on a machine with an
#     index, ~53 MB: pydantic, faiss-cpu, mlflow and what they need beyond the image, and plain_loop.py;
#     carried with carry=["build/gpu-wheels"]): `pip install --no-index --no-deps --target` a private
#     folder, put on PYTHONPATH (the image's own packages stay as they are);
#   - else, where a package index answers: `pip install -e .` (the project's own dependency list);
#   - else it says what is missing and runs what it can.
# It never needs the project installed: the repository is put on PYTHONPATH and `kd-sweep` is run as
# `python -m orchestrator.cli` (the console script's entry point).
# What cannot be had on those machines: Ray (its wheel alone is over the carry limit): the `kd-sweep run`
# test skips and `kd-sweep bench` stops at its orchestration section; faiss-gpu (a CUDA 12 build; the
# image's CUDA is 13): the GPU k-NN is kd-sweep's exact matmul fallback (tested against CPU faiss).
# Timing on an H100 (expected, not yet measured): start and install ~20 s, tests ~3 min, gpu_bench ~4 min:
# GPU_CHECK_BUDGET_S (default 470) bounds the whole; call the device tool with timeout_s=540.
set -uo pipefail  # not -e: a step that fails is reported and the next one still runs
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/gpu-check-out}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
WHEELS=${GPU_WHEELS:-build/gpu-wheels}
SITE=${GPU_CHECK_SITE:-/tmp/kd-sweep-site}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
START=$SECONDS
FAILED=()

say() { printf '[gpu_check %3ds] %s\n' $((SECONDS - START)) "$*"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# cap CAP RESERVE: a step's time limit, CAP or what the budget leaves once RESERVE seconds are kept for the
# steps after it, whichever is smaller (10 at least).
cap() { local l=$(($(left) - $2)); l=$(($1 < l ? $1 : l)); echo $((l > 10 ? l : 10)); }

pick_python() {
    # The Python that holds torch: $PYTHON, this checkout's .venv (here), else python3 (the GPU image's).
    for p in "${PYTHON:-}" .venv/bin/python python3; do
        [ -n "$p" ] && command -v "$p" >/dev/null && "$p" -c "import torch" 2>/dev/null && { echo "$p"; return; }
    done
    return 1
}

importable() {  # the modules among "$@" that import, one a line
    "$PY" - "$@" <<'EOF'
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        print(name)
    except Exception:
        pass
EOF
}

missing_of() {  # the modules among "$@" that do not import
    local ok
    ok=$(importable "$@")
    for m in "$@"; do grep -qx "$m" <<<"$ok" || echo "$m"; done
}

describe_machine() {
    say "step 1: the machine"
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "uname: $(uname -srm); cpus: $(nproc); free disk in /tmp: $(df -h /tmp | awk 'NR==2{print $4}')"
        echo "python: $PY ($("$PY" -V 2>&1))"
        "$PY" -c "import torch; c = torch.cuda.is_available()
print('torch', torch.__version__, '| cuda', torch.version.cuda, '| GPU:', torch.cuda.get_device_name() if c else 'none')"
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    } 2>&1 | tee "$OUT/env.txt"
}

index_answers() {  # a package index is reachable (pip's own configuration): one small resolve, time-boxed
    timeout 20 "$PY" -m pip download -q --no-deps -d "$(mktemp -d)" "pip" >/dev/null 2>&1
}

install_missing() {
    say "step 2: what kd-sweep imports"
    local need=(pydantic faiss yaml typer rich numpy torchvision mlflow ray optuna)
    local missing
    missing=$(missing_of "${need[@]}")
    if [ -z "$missing" ]; then
        say "all of ${need[*]} import: nothing to install"
    elif ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        say "missing: $(echo $missing); installing the $(ls "$WHEELS"/*.whl | wc -l) wheels of $WHEELS into $SITE (no index, no deps)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "$WHEELS"/*.whl || FAILED+=("install: pip install of $WHEELS failed")
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    elif index_answers; then
        say "missing: $(echo $missing); a package index answers: pip install -e . (the project's dependencies)"
        timeout "$(cap 300 240)" "$PY" -m pip install -q -e . || FAILED+=("install: pip install -e . failed")
    else
        say "missing: $(echo $missing); no wheels in $WHEELS and no package index: make them with" \
            "scripts/gpu_wheels.sh where an index answers and carry $WHEELS"
    fi
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    missing=$(missing_of "${need[@]}")
    say "importable now: $(echo $(importable "${need[@]}")); still missing: $(echo ${missing:-none})"
    grep -qx ray <<<"$missing" && say "without ray: the \`kd-sweep run\` test skips; \`kd-sweep bench\` stops at its orchestration section"
    grep -qx mlflow <<<"$missing" && say "without mlflow: orchestrator.runner does not import: the tests skip and gpu_bench.py fails"
    CORE_MISSING=$(echo $(grep -x -e pydantic -e faiss -e yaml -e numpy <<<"$missing"))
}

run_tests() {
    say "step 3: pytest -m gpu tests/test_gpu.py"
    if [ -n "$CORE_MISSING" ]; then
        say "not run: the trainer cannot import without $CORE_MISSING"
        FAILED+=("tests: not run ($CORE_MISSING missing)")
        return
    fi
    local t rc
    t=$(cap 240 150)
    # Deterministic cuBLAS for the bit-for-bit tests; a neighbour cache of this run's own.
    CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONUNBUFFERED=1 KD_SWEEP_CACHE=$(mktemp -d) \
        timeout -k 15 "$t" "$PY" -m pytest -m gpu -ra -v --durations=12 -p no:cacheprovider --junitxml="$OUT/pytest.xml" \
        tests/test_gpu.py 2>&1 | tee "$OUT/pytest.txt"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) ;;
        124|137) FAILED+=("tests: stopped at their ${t}s limit") ;;
        *) FAILED+=("tests: pytest exited $rc") ;;
    esac
    if [ "$HAS_GPU" = 1 ] && grep -qE '^=* ?[0-9]+ skipped' <(tail -1 "$OUT/pytest.txt"); then
        say "WARNING: on a GPU every test skipped: see the reasons above"
        FAILED+=("tests: all skipped on a GPU")
    fi
}

run_gpu_bench() {
    say "step 4: scripts/gpu_bench.py (the CUDA figures, compile modes)"
    if [ -n "$CORE_MISSING" ]; then
        say "not run: $CORE_MISSING missing"
        return
    fi
    local b rc
    b=$(cap 300 40)
    timeout -k 15 $((b + 60)) "$PY" scripts/gpu_bench.py --budget "$b" --json "$OUT/gpu_bench.json" 2>&1 \
        | tee "$OUT/gpu_bench.txt"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || FAILED+=("gpu_bench: exited $rc")
}

run_kd_sweep_bench() {
    say "step 5: kd-sweep bench"
    if [ "$HAS_GPU" != 1 ] && [ "${GPU_CHECK_BENCH_ON_CPU:-0}" != 1 ]; then
        say "skipped: no GPU here (its CPU run takes ~10 minutes on 2 cores; GPU_CHECK_BENCH_ON_CPU=1 runs it)"
        return
    fi
    if [ -n "$CORE_MISSING" ] || [ "$(left)" -lt 90 ]; then
        say "skipped: $(left) s of the budget left (or $CORE_MISSING missing); the CUDA figures are in gpu_bench.txt"
        return
    fi
    local plain rc
    for plain in "${PLAIN_LOOP:-}" "$WHEELS/plain_loop.py" "$(dirname "$REPO")/shared/bench/plain_loop.py"; do
        [ -n "$plain" ] && [ -f "$plain" ] && break
    done
    say "running with $(left) s left (cut off there; what it printed by then is in bench.txt)"
    PYTHONUNBUFFERED=1 timeout -k 15 "$(cap 600 5)" "$PY" -m orchestrator.cli bench ${plain:+--plain-loop "$plain"} 2>&1 \
        | tee "$OUT/bench.txt"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) ;;
        124|137) say "kd-sweep bench was cut off at the budget (expected: its CPU section comes first)" ;;
        *) say "kd-sweep bench exited $rc (without Ray its orchestration section fails; see bench.txt)" ;;
    esac
}

say "OUT=$OUT, budget ${BUDGET}s"
PY=$(pick_python) || { say "no Python with torch here: nothing can run"; exit 1; }
describe_machine
HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
[ "$HAS_GPU" = 1 ] || say "no CUDA device: the GPU steps will skip (a dry run of this script)"
install_missing
run_tests
run_gpu_bench
run_kd_sweep_bench
say "done in $((SECONDS - START)) s: ${#FAILED[@]} step(s) failed${FAILED:+: ${FAILED[*]}}"
[ ${#FAILED[@]} = 0 ]
