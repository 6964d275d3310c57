"""The dispatch settings of scripts/test_dispatch.sh really change the kernels torch runs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import torch; from tests.cpu_dispatch import onednn_isa; "
         "print(torch.backends.cpu.get_cpu_capability()); print(onednn_isa())")


def _probe(**env: str) -> list[str]:
    """(ATen capability, oneDNN ISA) of a fresh interpreter run with `env` added."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.splitlines()[-2:]


def test_capped_settings_take_effect_in_a_new_process() -> None:
    aten, isa = _probe(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    assert aten == "DEFAULT"
    assert isa == "Intel SSE4.1"  # every x86-64 CPU we run on has SSE4.1
    assert _probe()[1] != "not used"  # uncapped, the probe convolution reaches oneDNN too


def test_the_script_names_its_settings_when_asked_for_an_unknown_one() -> None:
    out = subprocess.run(["bash", "scripts/test_dispatch.sh", "avx1024"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "Unknown dispatch setting 'avx1024'" in out.stderr
    for name in ("aten-default", "onednn-sse41", "mkl-compatible", "oldest"):
        assert name in out.stderr
