"""Partial views of a person: bodies cut by the image border, and large occluders.

Users' photos are portraits, desk webcams and people cut by the frame far more often than the
full bodies of the 3D training sets. This module draws, for one sample, the two ways a joint
leaves the picture, and says which joints stay in view:

- a **border cut** (`Cut`): a straight image edge through the body. Everything beyond it is
  gone (rendered black, like the padding `render_crop` puts outside a source image), and the
  person's box is re-framed around what is left, as a detector or a user would box it: the
  visible joints plus the places where the body leaves the picture. Cuts come mostly from below
  (head and shoulders, waist-up, knees-up), sometimes from a side or from above.
- a **tight box** (a `Cut` with `tight=True`): the same re-framed box, but the picture goes on
  beyond the line: a user who boxes only the upper body, or the service's own second pass
  boxing the joints it saw first. Joints stay in view while they are inside the crop.
- an **occluder** (`Occluder`): an opaque rectangle in the crop, a table edge across the lower
  body or a block over some joints, filled with a patch of the crop's own scene (shifted and
  mirrored) or with a flat colour with some noise.

A joint is **in view** when it is labelled, inside the crop, inside the source image, on the near
side of a cut and not under an occluder. The training loss supervises the positions of the joints
in view only (an invented position is never rewarded, and an unseen joint cannot pull the seen
ones), and teaches the model's visibility head the in-view label of every labelled joint.
Self-occlusion (a hand behind the back) is not drawn here: the synthetic renders label it
(`Sample.self_occluded`, from the depth buffer), and such a joint is out of view but keeps its
position target.

Every draw comes from a numpy Generator after the crop and colour draws, so switching partial
views off leaves the other examples bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posecontract.geometry import Crop
from training.camera import Box, box_around

# Where a border cut falls, as a fraction of the labelled joints' extent along the cut's normal
# (0: the first joint to leave, 1: the last), for cuts from below: head and shoulders (the
# shoulders sit near 0.2 of the head-top-to-ankle extent), waist-up (hips near 0.5) and knees-up
# (knees near 0.75). Portraits and webcams dominate users' photos, so the three weigh equally.
BELOW_CUTS = ((0.22, 0.40), (0.40, 0.62), (0.62, 0.90))
SIDE_CUT = (0.35, 0.85)  # a cut from the left or right keeps this fraction of the width
ABOVE_CUT = (0.75, 0.95)  # a cut from above removes the head top at most, and at least some
# Direction of the cut's normal: below (0.75), a side (0.15) or above (0.10); cuts from below
# tilt by N(0, 8 degrees), clipped to 20 (a camera not held level).
DIRECTION_WEIGHTS = (0.75, 0.15, 0.10)
TILT_STD_DEG, TILT_MAX_DEG = 8.0, 20.0
MIN_VISIBLE = 3  # a cut leaves at least this many labelled joints; else it is not made
OCCLUDER_SIDE = (0.2, 0.5)  # block side as a fraction of the crop side
FLAT_FILL_PROB = 0.5  # occluder filled with a flat colour (else with a patch of the scene)


@dataclass(frozen=True)
class PartialView:
    """How often a training example shows a partial body (each drawn independently)."""

    cut_prob: float = 0.0
    occluder_prob: float = 0.0
    tight_prob: float = 0.0  # of the cuts, the share that are tight boxes (no border drawn)

    def __post_init__(self) -> None:
        for name in ("cut_prob", "occluder_prob", "tight_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PartialView.{name} must be a probability in [0, 1], "
                                 f"got {value}")

    @property
    def active(self) -> bool:
        return self.cut_prob > 0 or self.occluder_prob > 0


@dataclass(frozen=True)
class Cut:
    """A straight image border in source pixels: points u with u . normal > offset are gone.
    A `tight` cut only re-frames the box: the picture beyond the line stays."""

    normal: tuple[float, float]  # unit vector pointing out of the remaining picture
    offset: float
    tight: bool = False

    def beyond(self, uv: np.ndarray) -> np.ndarray:
        """Mask (...,) of source pixels (..., 2) beyond the border."""
        return np.asarray(uv, dtype=np.float64) @ np.asarray(self.normal) > self.offset

    def clamp(self, uv: np.ndarray) -> np.ndarray:
        """Points (N, 2) moved back onto the border where they lie beyond it."""
        uv = np.asarray(uv, dtype=np.float64)
        normal = np.asarray(self.normal)
        excess = np.maximum(uv @ normal - self.offset, 0.0)
        return uv - excess[:, None] * normal


@dataclass(frozen=True)
class Occluder:
    """An opaque rectangle in crop pixels [x0, x1) x [y0, y1), and how it is filled."""

    x0: float
    y0: float
    x1: float
    y1: float
    colour: tuple[int, int, int] | None  # a flat colour, or None: a patch of the crop
    shift: tuple[int, int] = (0, 0)  # where the patch comes from, relative to the rectangle

    def covers(self, xy: np.ndarray) -> np.ndarray:
        """Mask (...,) of crop pixel positions (..., 2) under the rectangle."""
        xy = np.asarray(xy, dtype=np.float64)
        return ((xy[..., 0] >= self.x0) & (xy[..., 0] < self.x1)
                & (xy[..., 1] >= self.y0) & (xy[..., 1] < self.y1))


def draw_cut(rng: np.random.Generator, uv: np.ndarray, labelled: np.ndarray) -> Cut | None:
    """Draw a border cut through the labelled joints' pixels `uv` (17, 2); None when the
    person is too small a target (fewer than MIN_VISIBLE joints would stay)."""
    kind = int(rng.choice(3, p=DIRECTION_WEIGHTS))
    tilt = math.radians(float(np.clip(rng.normal(0.0, TILT_STD_DEG), -TILT_MAX_DEG,
                                      TILT_MAX_DEG)))
    band = int(rng.integers(len(BELOW_CUTS)))
    side = 1.0 if rng.random() < 0.5 else -1.0
    fraction_draw = rng.random()
    if kind == 0:
        normal = (math.sin(tilt), math.cos(tilt))  # below: +v, tilted
        lo, hi = BELOW_CUTS[band]
    elif kind == 1:
        normal = (side, 0.0)
        lo, hi = SIDE_CUT
    else:
        normal = (0.0, -1.0)
        lo, hi = ABOVE_CUT
    points = np.asarray(uv, dtype=np.float64)[labelled]
    if len(points) < MIN_VISIBLE:
        return None
    along = points @ np.asarray(normal)
    low, high = float(along.min()), float(along.max())
    if not high > low:
        return None
    cut = Cut(normal, low + (lo + (hi - lo) * fraction_draw) * (high - low))
    if int((~cut.beyond(points)).sum()) < MIN_VISIBLE:
        return None
    return cut


def cut_box(cut: Cut, uv: np.ndarray, labelled: np.ndarray) -> Box:
    """The person's box once cut: around the visible joints and where the body leaves the
    picture (the cut-off joints moved onto the border), as a detector would frame it."""
    return box_around(cut.clamp(np.asarray(uv, dtype=np.float64)[labelled]))


def apply_cut(pixels: np.ndarray, crop: Crop, cut: Cut) -> None:
    """Black out, in place, the crop pixels (size, size, 3) whose source point is beyond `cut`
    (nothing for a tight cut)."""
    if cut.tight:
        return
    size = pixels.shape[0]
    centres = np.arange(size, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    inverse = np.linalg.inv(crop.pixel_matrix)
    src_u = inverse[0, 0] * gx + inverse[0, 1] * gy + inverse[0, 2]
    src_v = inverse[1, 0] * gx + inverse[1, 1] * gy + inverse[1, 2]
    gone = cut.beyond(np.stack([src_u, src_v], axis=-1))
    pixels[gone] = 0


def draw_occluder(rng: np.random.Generator, crop_xy: np.ndarray, candidates: np.ndarray,
                  size: int) -> Occluder | None:
    """Draw an occluder over a crop of `size` pixels: a band across the crop below a joint
    (a table; half the time) or a block centred near one joint. `crop_xy` (17, 2) are the
    joints' crop pixels, `candidates` (17,) the joints it may be placed on."""
    table = rng.random() < 0.5
    block = rng.uniform(*OCCLUDER_SIDE, size=2) * size
    offset = rng.uniform(-0.5, 0.5, size=2)
    flat = rng.random() < FLAT_FILL_PROB
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    shift = tuple(int(s) for s in rng.integers(-size // 2, size // 2, size=2))
    index = rng.integers(1 << 30)
    on = np.flatnonzero(candidates)
    if len(on) == 0:
        return None
    x, y = (float(v) for v in crop_xy[on[index % len(on)]])
    if table:  # from a little above the chosen joint down to the crop's bottom edge
        x0, x1, y0, y1 = 0.0, float(size), y - 0.25 * block[1], float(size)
    else:
        x, y = x + offset[0] * block[0], y + offset[1] * block[1]
        x0, x1, y0, y1 = x - block[0] / 2, x + block[0] / 2, y - block[1] / 2, y + block[1] / 2
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, float(size)), min(y1, float(size))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return Occluder(x0, y0, x1, y1, colour if flat else None, shift)


def apply_occluder(pixels: np.ndarray, occ: Occluder, rng: np.random.Generator) -> None:
    """Paint the occluder into the crop pixels (size, size, 3) in place: covered pixels are
    those whose centre lies in the rectangle, as `Occluder.covers` judges joints."""
    size = pixels.shape[0]
    xs = np.arange(math.ceil(occ.x0 - 0.5), math.ceil(occ.x1 - 0.5))
    ys = np.arange(math.ceil(occ.y0 - 0.5), math.ceil(occ.y1 - 0.5))
    xs, ys = xs[(xs >= 0) & (xs < size)], ys[(ys >= 0) & (ys < size)]
    if len(xs) == 0 or len(ys) == 0:
        return
    if occ.colour is not None:
        noise = rng.normal(0.0, 8.0, size=(len(ys), len(xs), 1))
        patch = np.clip(np.asarray(occ.colour, dtype=np.float64) + noise, 0, 255)
    else:  # the scene's own texture, from elsewhere in the crop, mirrored
        src_x = np.clip(xs + occ.shift[0], 0, size - 1)[::-1]
        src_y = np.clip(ys + occ.shift[1], 0, size - 1)
        patch = pixels[np.ix_(src_y, src_x)].astype(np.float64)
    pixels[np.ix_(ys, xs)] = patch.astype(np.uint8)
