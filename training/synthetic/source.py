"""`SyntheticHumans`: a `SampleSource` that renders a synthetic person per index, on the fly.

Sample i of `SyntheticHumans(split, size, seed)` is a pure function of (split, seed, i): its
generator is seeded with (seed, split id, i), then draws a body of the split, a pose
(`poses.sample_pose`) and a scene (`scene.render_scene`). The splits differ in everything they
can: "test" uses the held-out bodies of the asset, the held-out clips (`motions.TEST_CLIPS`),
its own background photos (`backgrounds.TEST_PHOTOS`) and a different random stream.

Every sample is 3D: all 17 joints labelled (occluded or not), camera-space millimetres, with
the standard reference box around their projections and MargiPose's 3D augmentation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.camera import AUG_3D, reference_box
from training.data.sample import Sample
from training.skeleton import NUM_JOINTS
from training.synthetic.body import SPLITS, BodyAsset, default_bodies
from training.synthetic.motions import MotionLibrary, default_motions
from training.synthetic.poses import sample_pose
from training.synthetic.scene import Scene, render_scene


def render_sample(asset: BodyAsset, library: MotionLibrary, split: str, seed: int, index: int
                  ) -> tuple[Sample, Scene]:
    """Render sample `index` of (`split`, `seed`); also return the scene (for its body mask)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    bodies = asset.bodies(split)
    body = int(bodies[rng.integers(len(bodies))])
    pose, pose_meta = sample_pose(rng, library, split)
    scene = render_scene(asset, body, pose, rng, split)
    meta = {"dataset": f"synthetic-{split}", "subject": f"body{body:02d}", "body": body,
            "seed": seed, "index": index, **pose_meta, **scene.meta}
    sample = Sample(
        image=Image.fromarray(scene.image),
        camera=scene.camera,
        joints=scene.joints,
        mask=np.ones(NUM_JOINTS, dtype=bool),
        has_depth=True,
        box=reference_box(scene.camera, scene.joints),
        augmentation=AUG_3D,
        meta=meta,
        occluded=scene.occluded,
        self_occluded=scene.self_occluded,
    )
    return sample, scene


class SyntheticHumans:
    """`size` rendered samples of `split` ("train" or "test"), deterministic from `seed`."""

    has_depth = True

    def __init__(self, split: str = "train", size: int = 10_000, seed: int = 0,
                 asset: BodyAsset | None = None, library: MotionLibrary | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.name = f"synthetic-{split}"
        self.split, self.size, self.seed = split, size, seed
        self._asset = asset
        self._library = library

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        if not -self.size <= index < self.size:
            raise IndexError(f"Index {index} out of range for {self.size} samples")
        index %= self.size
        asset = self._asset if self._asset is not None else default_bodies()
        library = self._library if self._library is not None else default_motions()
        return render_sample(asset, library, self.split, self.seed, index)[0]
