"""The malloc arena cap: threads share the capped arenas, and `serve` sets it before anything.

Without the cap every thread that allocates gets an arena of its own, which keeps its freed
memory resident; the gateway's RSS then climbs under load with no leak (issue 9).
"""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import service.__main__ as serve
from service.allocator import limit_malloc_arenas

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process: cap the arenas (argv[1]; 0 leaves glibc's default), then 8 threads that are
# all alive at once allocate; print whether the cap took and how many arenas malloc_info reports.
ARENAS_SCRIPT = """
import ctypes, sys, tempfile, threading, xml.etree.ElementTree as ET
from service.allocator import limit_malloc_arenas

capped = limit_malloc_arenas(int(sys.argv[1]))
alive = threading.Barrier(8)

def work():
    blocks = [bytearray(4096) for _ in range(256)]
    alive.wait()
    del blocks

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    stream = ctypes.c_void_p(libc.fopen(f.name.encode(), b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    arenas = len(ET.parse(f.name).getroot().findall("heap"))
print(capped, arenas)
"""


def arenas_after_threads(cap: int) -> tuple[bool, int]:
    """(whether the cap took, arenas in use) in a fresh process after 8 allocating threads."""
    out = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, str(cap)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_capped_arenas_are_shared_by_every_thread():
    capped, arenas = arenas_after_threads(0)
    assert not capped and arenas > 2  # glibc's default: the main arena + one per thread
    assert arenas_after_threads(2) == (True, 2)


def test_a_negative_cap_is_refused():
    with pytest.raises(ValueError, match="got -1"):
        limit_malloc_arenas(-1)


@pytest.mark.parametrize(("argv", "cap"), [([], 2), (["--malloc-arena-max", "0"], 0)])
def test_serve_caps_the_arenas_before_it_builds_the_gateway(monkeypatch, argv, cap):
    calls = []
    monkeypatch.setattr(serve.allocator, "limit_malloc_arenas", calls.append)
    monkeypatch.setattr(serve.logs, "configure", lambda level: None)
    monkeypatch.setattr(serve, "Gateway", lambda settings: calls.append("gateway"))
    monkeypatch.setattr(serve.asyncio, "run", lambda coroutine: coroutine.close())
    serve.main(argv)
    assert calls == [cap, "gateway"]
