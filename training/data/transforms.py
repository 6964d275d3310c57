"""Sample -> training example: augmented crop, colour jitter, normalised targets and masks.

One `Sample` (a full source image with camera-space joints) becomes one `Example`: the 256x256
uint8 crop the model sees, its normalised (x, y, z) targets, the joint mask and what is needed
to map a prediction back to the source camera (`Example.to_camera`). The geometry is the
existing crop pipeline (`training.camera`): a square of 1.5 x the projected joint extent (the
sample's box), jittered, rescaled, turned and mirrored by `CropParams` drawn from the sample's
augmentation family, resampled with 2x supersampling. Mirroring re-orders joints and mask.

Colour augmentation follows the reference: brightness, contrast and saturation each with
p = 0.3 and a factor U(0.8, 1.2), hue with p = 0.3 and a shift U(-0.1, 0.1) (in turns of the
colour wheel), applied in that order (Pillow's ImageEnhance Brightness -> Contrast -> Color,
then the hue shift) to the 256 crop after the warp.

Partial views (`training.data.partial`): with a `PartialView`, `random_example` also cuts some
bodies by a simulated image border and hides some joints under occluders. Every example says
which joints are in view (`Example.visible`: labelled, inside the crop and the source image, not
cut off, not occluded, not behind the body itself); the position loss only sees joints in view
among those it supervised before (a joint behind the body stays supervised: its place follows
from the body), and the visibility head learns `visible` on every labelled joint.

Everything is a pure function of the sample and the parameters; `random_example` draws the
parameters from a numpy Generator, so an example is reproducible from its generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import Tensor

from posecontract.crop_image import render_crop
from posecontract.geometry import Crop
from posecontract.layout import INPUT_SIZE
from training.camera import (
    CropParams,
    augmented_crop,
    crop_targets,
    inside_crop,
    ndc_to_camera,
    sample_params,
)
from training.data.partial import (
    MIN_VISIBLE,
    Cut,
    Occluder,
    PartialView,
    apply_cut,
    apply_occluder,
    cut_box,
    draw_cut,
    draw_occluder,
)
from training.data.sample import Sample
from training.skeleton import flip_joint_order

COLOUR_PROB = 0.3  # each of brightness, contrast, saturation and hue independently
COLOUR_FACTOR_RANGE = (0.8, 1.2)
HUE_SHIFT_RANGE = (-0.1, 0.1)


@dataclass(frozen=True)
class ColourParams:
    """One draw of the colour augmentation; the defaults leave the image unchanged."""

    brightness: float = 1.0  # ImageEnhance factors: 1 is the identity
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # shift in turns of the colour wheel, in [-0.5, 0.5]


@dataclass(frozen=True, eq=False)
class CropGeometry:
    """The crop of a sample and its float64 targets (before rendering and the float32 cast)."""

    crop: Crop
    target: np.ndarray  # (17, 3) float64 normalised coordinates, crop joint order
    mask: np.ndarray  # (17,) bool, crop joint order: the position loss's joints
    z_ref: float  # root depth, mm (the crop steps never change depth)
    labelled: np.ndarray  # (17,) bool, crop joint order: the sample labels the joint
    visible: np.ndarray  # (17,) bool, crop joint order: labelled, inside the crop and the
    # source image, and on the near side of the cut (occluders are judged after rendering)


@dataclass(frozen=True, eq=False)
class Example:
    """One training example, ready to collate."""

    image: Tensor  # (3, 256, 256) uint8 RGB
    target: Tensor  # (17, 3) float32 normalised (x, y, z); z meaningless unless has_depth or
    # teacher_depth
    mask: Tensor  # (17,) bool: labelled (and, for 2D-only samples, inside the crop), and not
    # cut off or occluded: the joints whose positions the loss supervises
    has_depth: bool
    crop: Crop  # crop camera and maps from the source camera (for `to_camera`)
    z_ref: float  # ground-truth root depth, mm
    joints: np.ndarray  # (17, 3) float64 source camera-space joints, canonical order, mm
    teacher_depth: bool = False  # z targets are a teacher's estimate (has_depth False)
    labelled: Tensor | None = None  # (17,) bool: the joints whose visibility is known
    visible: Tensor | None = None  # (17,) bool: in view (see the module docstring)

    def to_camera(self, ndc: np.ndarray, z_ref: float | None = None) -> np.ndarray:
        """Map normalised joints (17, 3) predicted on this crop to source camera mm
        (canonical order), at root depth `z_ref` (default: the ground truth)."""
        return ndc_to_camera(ndc, self.crop, self.z_ref if z_ref is None else z_ref)


def sample_colour(rng: np.random.Generator) -> ColourParams:
    """Draw colour augmentation parameters (each effect on with p = 0.3)."""
    lo, hi = COLOUR_FACTOR_RANGE
    # Fixed number of draws per call, so later draws do not depend on which effects fired.
    on = rng.random(4) < COLOUR_PROB
    factors = rng.uniform(lo, hi, size=3)
    hue = rng.uniform(*HUE_SHIFT_RANGE)
    return ColourParams(
        brightness=float(factors[0]) if on[0] else 1.0,
        contrast=float(factors[1]) if on[1] else 1.0,
        saturation=float(factors[2]) if on[2] else 1.0,
        hue=float(hue) if on[3] else 0.0,
    )


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by `shift` turns (torchvision's PIL adjust_hue)."""
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"Hue shift must be in [-0.5, 0.5] turns, got {shift}")
    h, s, v = image.convert("HSV").split()
    # Pillow's hue channel spans 0..255 for one turn; the shift wraps around, truncated to a
    # whole step towards zero as torchvision's np.uint8(shift * 255) does.
    hue = (np.asarray(h, dtype=np.int64) + int(shift * 255)) % 256
    h = Image.fromarray(hue.astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def apply_colour(image: np.ndarray, colour: ColourParams) -> np.ndarray:
    """Colour-augment an (H, W, 3) uint8 RGB image: brightness, contrast, saturation, hue."""
    if colour == ColourParams():
        return image
    pil = Image.fromarray(image)
    for enhancer, factor in (
        (ImageEnhance.Brightness, colour.brightness),
        (ImageEnhance.Contrast, colour.contrast),
        (ImageEnhance.Color, colour.saturation),
    ):
        if factor != 1.0:
            pil = enhancer(pil).enhance(factor)
    if colour.hue != 0.0:
        pil = shift_hue(pil, colour.hue)
    return np.asarray(pil, dtype=np.uint8).copy()


def _source_pixels(sample: Sample) -> np.ndarray:
    """The joints' source pixels (17, 2); unlabelled NaN placeholders give NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sample.camera.project(sample.joints)


def crop_geometry(sample: Sample, params: CropParams, size: int = INPUT_SIZE,
                  cut: Cut | None = None) -> CropGeometry:
    """The crop of `sample` under `params`, with its normalised targets and joint masks.

    With a `cut`, the person's box is re-framed around what the cut leaves (`cut_box`) and the
    joints beyond it leave the position mask and the visible set; beyond a tight cut the picture
    goes on, so there the joints outside the crop leave them instead."""
    box = sample.box
    uv = _source_pixels(sample)
    if cut is not None:
        box = cut_box(cut, uv, sample.mask)
    crop = augmented_crop(sample.camera, box, params, size)
    joints = sample.joints
    missing = ~np.isfinite(joints).all(axis=-1)
    if missing.any():
        if (missing & sample.mask).any():
            raise ValueError(f"Labelled joints {np.flatnonzero(missing & sample.mask).tolist()} "
                             "have non-finite coordinates")
        # Unlabelled joints may be NaN placeholders: give them a finite stand-in (the mean of
        # the others) so the root depth and the other targets stay finite; they stay masked.
        joints = joints.copy()
        joints[missing] = joints[~missing].mean(axis=0)
    _, target, z_ref = crop_targets(joints, crop)
    width, height = sample.image.size
    with np.errstate(invalid="ignore"):
        in_view = (sample.mask & (uv[:, 0] >= 0) & (uv[:, 0] < width)
                   & (uv[:, 1] >= 0) & (uv[:, 1] < height))
    cut_off = cut is not None and not cut.tight
    kept = ~cut.beyond(np.nan_to_num(uv)) if cut_off else np.ones_like(sample.mask)
    if sample.occluded is not None:
        kept = kept & ~sample.occluded  # hidden in the source picture itself
    mask = sample.mask & kept
    labelled = sample.mask.copy()
    if sample.self_occluded is not None:
        in_view = in_view & ~sample.self_occluded  # behind the body: not seen, still supervised
    if crop.flipped:
        mask, labelled = flip_joint_order(mask, axis=-1), flip_joint_order(labelled, axis=-1)
        in_view, kept = flip_joint_order(in_view, axis=-1), flip_joint_order(kept, axis=-1)
    if not sample.has_depth:
        # 2D-only joints outside the crop are not supervised (3D sets keep them: reference).
        mask &= inside_crop(target)
    elif cut is not None and cut.tight:
        mask &= inside_crop(target)  # what the tight box leaves out is not to be invented
    visible = in_view & kept & inside_crop(target)
    return CropGeometry(crop, target, mask, z_ref, labelled, visible)


def crop_pixels(target: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Normalised targets (17, 3) -> crop pixel positions (17, 2) (the crop edges at +-1)."""
    return (np.asarray(target)[:, :2] + 1.0) * (size / 2)


def make_example(
    sample: Sample,
    params: CropParams | None = None,
    colour: ColourParams | None = None,
    size: int = INPUT_SIZE,
    cut: Cut | None = None,
    occluder: Occluder | None = None,
    occluder_rng: np.random.Generator | None = None,
) -> Example:
    """Cut the example of `sample` under crop and colour parameters (None: no augmentation),
    and optionally a border `cut` and an `occluder` (painted with `occluder_rng`'s noise)."""
    geometry = crop_geometry(sample, params or CropParams(), size, cut)
    return _render(sample, geometry, colour, size, cut, occluder, occluder_rng)


def _render(sample: Sample, geometry: CropGeometry, colour: ColourParams | None, size: int,
            cut: Cut | None, occluder: Occluder | None,
            occluder_rng: np.random.Generator | None) -> Example:
    """The example of `geometry` (crop_geometry of the same sample and cut): pixels, the cut
    and the occluder painted, colour, and the masks less what the occluder hides."""
    pixels = render_crop(sample.image, geometry.crop)  # (size, size, 3)
    mask, visible = geometry.mask, geometry.visible
    if cut is not None:
        apply_cut(pixels, geometry.crop, cut)
    if occluder is not None:
        hidden = occluder.covers(crop_pixels(geometry.target, size))
        apply_occluder(pixels, occluder, occluder_rng or np.random.default_rng(0))
        mask, visible = mask & ~hidden, visible & ~hidden
    if colour is not None:
        pixels = apply_colour(pixels, colour)
    return Example(
        image=torch.from_numpy(pixels).permute(2, 0, 1).contiguous(),
        target=torch.from_numpy(geometry.target.astype(np.float32)),
        mask=torch.from_numpy(mask),
        has_depth=sample.has_depth,
        crop=geometry.crop,
        z_ref=geometry.z_ref,
        joints=sample.joints,
        teacher_depth=sample.teacher_depth,
        labelled=torch.from_numpy(geometry.labelled),
        visible=torch.from_numpy(visible),
    )


def partial_example(sample: Sample, params: CropParams | None, colour: ColourParams | None,
                    partial: PartialView, rng: np.random.Generator,
                    size: int = INPUT_SIZE) -> Example:
    """An example that may show a partial body: a border cut with probability
    `partial.cut_prob` (a tight box instead with `partial.tight_prob`), then an occluder with
    `partial.occluder_prob`, drawn from `rng` (a fixed number of draws whichever fire). An
    occluder that would leave fewer than `MIN_VISIBLE` joints in view is not painted."""
    cut, want_occluder, occluder_rng, paint_rng = draw_partial_cut(sample, partial, rng)
    geometry = crop_geometry(sample, params or CropParams(), size, cut)
    occluder = None
    if want_occluder:
        joints_px = crop_pixels(geometry.target, size)
        occluder = draw_occluder(occluder_rng, joints_px, geometry.visible, size)
        if (occluder is not None
                and int((geometry.visible & ~occluder.covers(joints_px)).sum()) < MIN_VISIBLE):
            occluder = None
    return _render(sample, geometry, colour, size, cut, occluder, paint_rng)


def draw_partial_cut(sample: Sample, partial: PartialView, rng: np.random.Generator
                     ) -> tuple[Cut | None, bool, np.random.Generator, np.random.Generator]:
    """The first draws of `partial_example`: the border cut (None if none is made, tight with
    `partial.tight_prob`), whether an occluder is wanted, and the generators the occluder and
    its paint draw from."""
    want_cut, want_occluder = rng.random(2) < (partial.cut_prob, partial.occluder_prob)
    cut_rng, occluder_rng, paint_rng = rng.spawn(3)
    cut = draw_cut(cut_rng, _source_pixels(sample), sample.mask) if want_cut else None
    if cut is not None and cut_rng.random() < partial.tight_prob:
        cut = replace(cut, tight=True)
    return cut, bool(want_occluder), occluder_rng, paint_rng


def random_example(sample: Sample, rng: np.random.Generator, size: int = INPUT_SIZE,
                   partial: PartialView | None = None) -> Example:
    """Cut an augmented example: crop parameters from the sample's family, then colour, then
    (with an active `partial`) a partial view."""
    params = sample_params(rng, sample.augmentation)
    colour = sample_colour(rng)
    if partial is None or not partial.active:
        return make_example(sample, params, colour, size)
    return partial_example(sample, params, colour, partial, rng, size)


def example_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of one draw, from the run seed and the draw's key (non-negative ints)."""
    if seed < 0 or any(k < 0 for k in key):
        raise ValueError(f"Seeds and keys must be non-negative, got seed {seed} and key {key}")
    return np.random.default_rng([seed, *key])
