"""Which CPU kernels torch runs: float32 results differ between them (README, Development).

PyTorch dispatches at run time: ATen's vectorised kernels by ATEN_CPU_CAPABILITY (default,
avx2, avx512), oneDNN's convolutions by ONEDNN_MAX_CPU_ISA, MKL's GEMM by MKL_CBWR; so does
numpy (NPY_DISABLE_CPU_FEATURES turns targets off) and its OpenBLAS (OPENBLAS_CORETYPE). Each is
read once, when the library loads or first runs, so they are set for a whole process
(`scripts/test_dispatch.sh`).
"""

import os
import tempfile

import torch

DISPATCH_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR",
                      "MKL_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")


def numpy_simd() -> str:
    """The SIMD targets numpy's dispatched loops may use here, or its baseline alone."""
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

    enabled = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    return " ".join(enabled) if enabled else f"baseline {' '.join(__cpu_baseline__)}"


def onednn_isa() -> str:
    """The instruction set oneDNN runs on, read from its verbose line for one convolution."""
    conv = torch.nn.Conv2d(8, 8, 3, groups=8)  # depthwise: torch hands it to oneDNN
    saved = os.dup(1)  # oneDNN prints to the process's stdout, below Python's sys.stdout
    with tempfile.TemporaryFile() as out:
        try:
            os.dup2(out.fileno(), 1)
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                conv(torch.zeros(1, 8, 16, 16))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    isa = [line.split("isa:", 1)[1] for line in lines if ",isa:" in line]
    return isa[0] if isa else "not used"
