#!/usr/bin/env bash
# The test suite under CPU kernels other than this machine's own, one run per setting: float32
# results differ between kernels, so a tolerance tuned on one CPU can fail on another (an Intel
# Xeon and an AMD EPYC take different AVX-512, AVX2 and MKL paths). CI runs the default path.
#   bash scripts/test_dispatch.sh                        # every setting in DEFAULT_ORDER
#   bash scripts/test_dispatch.sh onednn-sse41 oldest    # the named ones
#   PYTEST_ARGS="tests/training -m 'not slow'" bash scripts/test_dispatch.sh aten-default
# Each run's log is build/dispatch/<setting>.log; its header names the kernels that ran (see
# pytest_report_header in tests/conftest.py). Exits 1 if any setting fails.
set -uo pipefail
cd "$(dirname "$0")/.."

declare -A SETTINGS=(
    # ATen's own vectorised kernels (elementwise ops, reductions, batch norm, softmax).
    [aten-default]="ATEN_CPU_CAPABILITY=default"
    [aten-avx2]="ATEN_CPU_CAPABILITY=avx2"
    # oneDNN's convolutions and their gradients, capped at an older instruction set.
    [onednn-sse41]="ONEDNN_MAX_CPU_ISA=SSE41"
    [onednn-avx2]="ONEDNN_MAX_CPU_ISA=AVX2"
    # MKL's GEMM (linear layers, im2col convolutions): its reproducible SSE2 code path.
    [mkl-compatible]="MKL_CBWR=COMPATIBLE"
    # NumPy's own SIMD loops (every dispatched target off: its baseline, SSE4.2 on numpy 2)
    # and its OpenBLAS on SSE4.2 kernels. Only the main venv's numpy: the Triton and MediaPipe
    # venvs' numpy 1.x names its targets otherwise and ignores these.
    [numpy-baseline]="NPY_DISABLE_CPU_FEATURES='@NUMPY_TARGETS@' OPENBLAS_CORETYPE=Nehalem"
    # All at once: an x86-64 CPU without AVX.
    [oldest]="ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE \
NPY_DISABLE_CPU_FEATURES='@NUMPY_TARGETS@' OPENBLAS_CORETYPE=Nehalem"
)
DEFAULT_ORDER=(aten-default aten-avx2 onednn-sse41 onednn-avx2 mkl-compatible numpy-baseline)

names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${DEFAULT_ORDER[@]}")
for name in "${names[@]}"; do
    if [ -z "${SETTINGS[$name]+x}" ]; then
        echo "Unknown dispatch setting '$name'; choose from: ${!SETTINGS[*]}" >&2
        exit 2
    fi
done

PYTHON=${PYTHON:-.venv/bin/python}
# The SIMD targets this numpy dispatches to at run time (its build decides their names).
numpy_targets=$("$PYTHON" -c "from numpy._core._multiarray_umath import __cpu_dispatch__ as d
print(' '.join(d))") || exit 2
mkdir -p build/dispatch
status=0
for name in "${names[@]}"; do
    log=build/dispatch/$name.log
    start=$SECONDS
    setting=${SETTINGS[$name]//@NUMPY_TARGETS@/$numpy_targets}
    # shellcheck disable=SC2086  # the setting and PYTEST_ARGS are word lists on purpose
    eval env $setting "$PYTHON" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-} >"$log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=1
    summary=$(tail -n 1 "$log" | tr -d '=' | sed 's/^ *//')
    printf '%-15s rc=%d %4ds  %s\n' "$name" "$rc" $((SECONDS - start)) "$summary"
    grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
done
exit $status
