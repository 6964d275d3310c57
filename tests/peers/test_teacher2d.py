"""The BlazePose 2D teacher (peers/teacher2d.py) in the MediaPipe venv, on committed photos."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from peers import teacher2d
from peers.blazepose_mapping import ROOT, map_points, root_relative

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
    # The teacher's 3D joints: mm, pelvis-relative, y down (the head above the ankles), human.
    joints3d = np.asarray(walkers[0]["joints3d"])
    assert joints3d.shape == (17, 3) and joints3d[ROOT].tolist() == [0.0, 0.0, 0.0]
    assert joints3d[0, 1] < -400 and joints3d[10, 1] > 500
    assert 200 < np.linalg.norm(joints3d[2] - joints3d[5]) < 500  # shoulder width
    bx0, by0, bx1, by1 = walkers[0]["box"]
    assert bx0 <= joints[mask, 0].min() and joints[mask, 0].max() <= bx1
    # The masked search finds both copies, one in each half.
    pair_people = [r for r in records if r["image"] == str(pair_path)]
    centres = sorted(np.mean(np.asarray(r["joints"])[:, 0]) for r in pair_people)
    assert len(centres) == 2 and centres[0] < 500 < centres[1]


# ----------------------------------------------------------------------------- without MediaPipe


class _ScriptedPose:
    """Stands in for MediaPipe's Pose: answers each `process` call with the next scripted
    (landmarks (33, 4) normalised to the processed image, world (33, 3) m) or None."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.shapes: list[tuple[int, ...]] = []

    def process(self, rgb: np.ndarray) -> SimpleNamespace:
        self.shapes.append(rgb.shape)
        answer = self.script.pop(0)
        if answer is None:
            return SimpleNamespace(pose_landmarks=None, pose_world_landmarks=None)
        norm, world = answer
        return SimpleNamespace(
            pose_landmarks=SimpleNamespace(landmark=[
                SimpleNamespace(x=x, y=y, z=z, visibility=v) for x, y, z, v in norm]),
            pose_world_landmarks=SimpleNamespace(landmark=[
                SimpleNamespace(x=x, y=y, z=z) for x, y, z in world]))

    def close(self) -> None:
        pass


def _person(rng: np.random.Generator, centre: float) -> tuple[np.ndarray, np.ndarray]:
    norm = np.concatenate([centre + rng.uniform(-0.2, 0.2, (33, 2)), np.zeros((33, 1)),
                           np.full((33, 1), 0.9)], axis=1)
    return norm, rng.normal(0.0, 0.4, (33, 3))


@pytest.mark.parametrize("refine_inside", [True, False])
def test_joints3d_come_from_the_run_whose_2d_joints_are_kept(tmp_path, monkeypatch,
                                                             refine_inside):
    # Search finds one person, then nobody; the refine run on the crop lands inside the search
    # box (kept) or far outside it (the search run stands). joints3d follow the kept run.
    rng = np.random.default_rng(0)
    search, refine = _person(rng, 0.5), _person(rng, 0.5 if refine_inside else 0.05)
    pose = _ScriptedPose([search, None, refine])
    monkeypatch.setattr(teacher2d, "make_pose", lambda complexity: pose)
    image = tmp_path / "frame.jpg"
    Image.new("RGB", (400, 300), (90, 110, 90)).save(image)
    out = tmp_path / "labels.jsonl"
    teacher2d.main(teacher2d.get_args_parser().parse_args(["--out", str(out), str(image)]))
    assert len(pose.shapes) == 3 and pose.shapes[2][0] == pose.shapes[2][1]  # a square crop
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["refined"] is refine_inside
    kept = refine if refine_inside else search
    expected = root_relative(map_points(1000.0 * kept[1]))  # mm, pelvis-relative
    np.testing.assert_allclose(record["joints3d"], expected, rtol=0, atol=0.005)  # 2 decimals
    assert np.asarray(record["joints3d"])[ROOT].tolist() == [0.0, 0.0, 0.0]
    # The 2D joints are the same run's: pixels of the frame (search) or of the crop (refine).
    if not refine_inside:
        np.testing.assert_allclose(record["joints"], map_points(search[0][:, :2] * (400, 300)),
                                   rtol=0, atol=0.005)
