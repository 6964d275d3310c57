"""Stick-figure samples for the training-pipeline tests: known camera, joints and drawing.

Each sample is a small grey image with a stick figure drawn by projecting known camera-space
joints (17, 3 mm) with a known camera: bones as lines, joints as discs of a colour of their own
(left and right differ) whose radius shrinks with depth. 3D samples look like MPI-INF-3DHP /
Human3.6M samples (reference box around the projected joints, AUG_3D); 2D samples like MPII
(stand-in camera, keypoints lifted to the focal plane, a few joints unlabelled, AUG_MPII).
`dataset_factory` opens these as dataset specs, for the trainer CLI's injectable factory.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from posecontract.geometry import Intrinsics
from training.camera import (
    AUG_3D,
    AUG_MPII,
    box_around,
    lift_to_focal_plane,
    mpii_camera,
    reference_box,
)
from training.data.sample import ListSource, Sample
from training.skeleton import NUM_JOINTS, PARENTS, ROOT

WIDTH, HEIGHT = 320, 240
CAMERA = Intrinsics(400.0, 410.0, 158.0, 123.0)  # fx != fy, principal point off-centre
JOINT_RADIUS_MM = 35.0

# An asymmetric standing person, root-relative mm (x right, y down, z away from the camera).
_BODY = np.array([
    [10, -700, 30], [0, -480, 0], [-180, -470, 20], [-230, -200, 60], [-250, 40, 120],
    [170, -475, -10], [260, -230, -80], [320, -10, -160], [-110, 0, 10], [-130, 380, 90],
    [-120, 760, 40], [100, 5, -10], [150, 400, -120], [160, 800, -60], [0, 0, 0],
    [0, -240, 10], [5, -590, 15],
], dtype=np.float64)
_COLOURS = [
    tuple(round(255 * c) for c in colorsys.hsv_to_rgb(j / NUM_JOINTS, 1.0, 1.0))
    for j in range(NUM_JOINTS)
]


def random_joints(rng: np.random.Generator) -> np.ndarray:
    """A perturbed, turned person (17, 3) in CAMERA's space, mm, fully inside the image."""
    body = _BODY + rng.normal(0.0, 60.0, size=_BODY.shape)
    body[ROOT] = 0.0
    yaw = rng.uniform(-0.8, 0.8)
    c, s = np.cos(yaw), np.sin(yaw)
    turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    depth = rng.uniform(4200.0, 5200.0)
    shift = np.array([rng.uniform(-250, 250), rng.uniform(-120, 120), depth])
    return body @ turn.T + shift


def draw_person(uv: np.ndarray, depth: np.ndarray, focal: float, size=(WIDTH, HEIGHT),
                background=(70, 70, 70)) -> Image.Image:
    """Draw projected joints uv (17, 2) as a coloured stick figure; disc size from depth."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for j, parent in enumerate(PARENTS):
        if parent != j:
            draw.line([tuple(uv[j]), tuple(uv[parent])], fill=_COLOURS[j], width=3)
    for j in np.argsort(-depth):  # far joints first, near ones on top
        r = focal * JOINT_RADIUS_MM / depth[j]
        u, v = uv[j]
        draw.ellipse((u - r, v - r, u + r, v + r), fill=_COLOURS[j])
    return image


def sample_3d(seed: int, dataset: str = "figures-3d") -> Sample:
    """A 3D sample: known camera, camera-space joints, all joints labelled."""
    rng = np.random.default_rng([seed, 3])
    joints = random_joints(rng)
    image = draw_person(CAMERA.project(joints), joints[:, 2], CAMERA.fx)
    return Sample(image=image, camera=CAMERA, joints=joints, mask=np.ones(NUM_JOINTS, bool),
                  has_depth=True, box=reference_box(CAMERA, joints), augmentation=AUG_3D,
                  meta={"dataset": dataset, "frame": seed})


def sample_2d(seed: int, dataset: str = "figures-2d") -> Sample:
    """An MPII-like sample: keypoints lifted to the stand-in camera's focal plane, a few
    joints unlabelled."""
    rng = np.random.default_rng([seed, 2])
    joints = random_joints(rng)
    uv = CAMERA.project(joints)
    image = draw_person(uv, joints[:, 2], CAMERA.fx)
    camera = mpii_camera(WIDTH, HEIGHT)
    mask = np.ones(NUM_JOINTS, bool)
    mask[rng.choice(NUM_JOINTS, size=2, replace=False)] = False
    return Sample(image=image, camera=camera, joints=lift_to_focal_plane(uv, camera), mask=mask,
                  has_depth=False, box=box_around(uv), augmentation=AUG_MPII,
                  meta={"dataset": dataset, "frame": seed})


def source_3d(n: int, first: int = 0, name: str = "figures-3d") -> ListSource:
    return ListSource(name, [sample_3d(first + i, name) for i in range(n)])


def source_2d(n: int, first: int = 0, name: str = "figures-2d") -> ListSource:
    return ListSource(name, [sample_2d(first + i, name) for i in range(n)])


SPECS = {
    "figures-3d": lambda: source_3d(6),
    "figures-2d": lambda: source_2d(5, first=100),
    "figures-val": lambda: source_3d(3, first=200, name="figures-val"),
}


def dataset_factory(spec: str, root: Path) -> ListSource:
    """Open a stick-figure dataset spec (a module-level function, so spawned ranks can use it)."""
    if spec not in SPECS:
        raise KeyError(f"Unknown stick-figure dataset {spec!r}; choose one of {sorted(SPECS)}")
    return SPECS[spec]()
