"""The BlazePose 2D teacher (peers/teacher2d.py) in the MediaPipe venv, on committed photos."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "data" / "photos"
WALKER_BOX = (1018, 478, 1518, 978)  # the woman walking in sports2d_frame075.jpg


def _teach(venv: Path, images: list[Path], out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([str(venv / "bin" / "python"), "-m", "peers.teacher2d", "--out", str(out),
                    *map(str, images)], check=True, env=env, cwd=REPO, capture_output=True,
                   timeout=300)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_labels_the_walker_and_finds_two_people_side_by_side(blazepose_venv, tmp_path):
    walker = Image.open(PHOTOS / "sports2d_frame075.jpg").convert("RGB").crop(WALKER_BOX)
    pair = Image.new("RGB", (1000, 500), (90, 110, 90))
    pair.paste(walker, (0, 0))
    pair.paste(walker.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (500, 0))
    pair_path = tmp_path / "pair.jpg"
    pair.save(pair_path, quality=95)
    records = _teach(blazepose_venv, [PHOTOS / "sports2d_frame075.jpg", pair_path],
                     tmp_path / "labels.jsonl")
    frame = [r for r in records if r["image"].endswith("sports2d_frame075.jpg")]
    x0, y0, x1, y1 = WALKER_BOX
    walkers = [r for r in frame
               if x0 <= np.mean(np.asarray(r["joints"])[:, 0]) <= x1]
    assert len(walkers) == 1
    joints = np.asarray(walkers[0]["joints"])
    mask = np.asarray(walkers[0]["mask"])
    assert mask.sum() >= 15
    assert ((joints[mask] >= (x0, y0)) & (joints[mask] <= (x1, y1))).all()
    assert walkers[0]["score"] >= 0.6
    bx0, by0, bx1, by1 = walkers[0]["box"]
    assert bx0 <= joints[mask, 0].min() and joints[mask, 0].max() <= bx1
    # The masked search finds both copies, one in each half.
    pair_people = [r for r in records if r["image"] == str(pair_path)]
    centres = sorted(np.mean(np.asarray(r["joints"])[:, 0]) for r in pair_people)
    assert len(centres) == 2 and centres[0] < 500 < centres[1]
