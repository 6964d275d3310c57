"""The BlazePose speed benchmark: its crops (main venv) and a short run (MediaPipe venv)."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from peers.bench_blazepose import PERSON_CROPS, PHOTOS, REPO, load_crops


@pytest.mark.parametrize(("name", "box"), PERSON_CROPS, ids=lambda v: str(v))
def test_person_crops_lie_inside_their_photos(name, box):
    x0, y0, side = box
    with Image.open(PHOTOS / name) as image:
        assert 0 <= x0 and 0 <= y0 and x0 + side <= image.width and y0 + side <= image.height


def test_load_crops_gives_square_rgb_arrays():
    crops = load_crops(256)
    assert len(crops) == len(PERSON_CROPS)
    for crop in crops:
        assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
        assert crop.std() > 10  # a real picture, not padding


def test_short_run_counts_images_in_both_process_counts(blazepose_venv, tmp_path):
    python = blazepose_venv / "bin" / "python"
    out = tmp_path / "bench.json"
    subprocess.run([str(python), "-m", "peers.bench_blazepose", "--complexities", "0",
                    "--processes", "1", "2", "--seconds", "0.5", "--json", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    payload = json.loads(out.read_text())
    assert payload["machine"]["cores"] >= 1 and payload["machine"]["cpu"]
    assert [(r["model"], r["processes"]) for r in payload["runs"]] == [("lite", 1), ("lite", 2)]
    for r in payload["runs"]:
        assert len(r["per_process"]) == r["processes"]
        assert r["images_per_s"] > 0 and r["cpu_ms_per_image"] > 0
        assert r["found_fraction"] == 1.0  # every crop holds a person BlazePose finds
