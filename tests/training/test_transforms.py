"""Tests for Sample -> training example: crops, targets, masks, inversion and colour jitter."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from tests.training.stick_figures import CAMERA, HEIGHT, WIDTH, sample_2d, sample_3d
from training.camera import CropParams, ndc_to_camera, sample_params
from training.data.sample import Sample
from training.data.transforms import (
    ColourParams,
    apply_colour,
    crop_geometry,
    example_rng,
    make_example,
    random_example,
    sample_colour,
    shift_hue,
)
from training.skeleton import joint_index

AUGMENTED = [
    CropParams(),
    CropParams(jitter=(12.0, -7.0), scale=1.08, rotation=0.4, flip=False),
    CropParams(jitter=(-5.0, 9.0), scale=0.93, rotation=-0.3, flip=True),
]


def _blob_sample(joint: str, flip_rotation: bool = True) -> Sample:
    """A 3D sample whose image is black but for a white blob on the projection of `joint`."""
    base = sample_3d(7)
    u0, v0 = CAMERA.project(base.joints[joint_index(joint)])
    u, v = np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5  # pixel centres
    spot = np.exp(-((u[None] - u0) ** 2 + (v[:, None] - v0) ** 2) / (2 * 1.5**2))
    grey = np.round(255 * spot).astype(np.uint8)
    image = Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    return dataclasses.replace(base, image=image)


def _centroid(image: torch.Tensor) -> np.ndarray:
    """Brightness centroid (u, v) of a (3, H, W) uint8 crop, continuous pixels."""
    w = image[0].double().numpy()
    rows, cols = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * (cols + 0.5)).sum(), (w * (rows + 0.5)).sum()]) / w.sum()


def test_example_has_the_training_layout() -> None:
    example = make_example(sample_3d(0))
    assert example.image.shape == (3, 256, 256) and example.image.dtype == torch.uint8
    assert example.target.shape == (17, 3) and example.target.dtype == torch.float32
    assert example.mask.shape == (17,) and example.mask.dtype == torch.bool
    assert example.has_depth is True and bool(example.mask.all())
    # The pelvis is the root: z = 0 at the ground-truth root depth.
    assert example.target[joint_index("pelvis"), 2] == 0.0
    assert example.z_ref == pytest.approx(sample_3d(0).joints[joint_index("pelvis"), 2])


@pytest.mark.parametrize("params", AUGMENTED)
def test_targets_map_back_to_the_sample_joints(params: CropParams) -> None:
    sample = sample_3d(3)
    geometry = crop_geometry(sample, params)
    back = ndc_to_camera(geometry.target, geometry.crop, geometry.z_ref)
    np.testing.assert_allclose(back, sample.joints, rtol=0, atol=1e-6)  # mm
    # The float32 training target loses ~1e-7 relative precision, i.e. well under 0.01 mm.
    example = make_example(sample, params)
    np.testing.assert_allclose(example.to_camera(example.target.numpy()), sample.joints,
                               rtol=0, atol=1e-2)


def test_randomly_augmented_targets_map_back_too() -> None:
    sample = sample_3d(4)
    for seed in range(5):
        example = random_example(sample, example_rng(0, seed))
        np.testing.assert_allclose(example.to_camera(example.target.numpy()), sample.joints,
                                   rtol=0, atol=1e-2)


@pytest.mark.parametrize("params", AUGMENTED)
def test_the_drawn_joint_lands_where_its_target_says(params: CropParams) -> None:
    example = make_example(_blob_sample("left_wrist"), params)
    # Mirrored crops hold joints in swapped order: the left wrist's blob is now "right_wrist".
    slot = joint_index("right_wrist" if params.flip else "left_wrist")
    expected = (example.target[slot, :2].numpy() + 1) * 128  # x = -1 .. 1 spans the crop
    np.testing.assert_allclose(_centroid(example.image), expected, atol=0.3)


def test_flip_permutes_the_mask_with_the_joints() -> None:
    sample = dataclasses.replace(sample_3d(1), mask=np.arange(17) != joint_index("left_elbow"))
    plain = make_example(sample, CropParams())
    flipped = make_example(sample, CropParams(flip=True))
    assert not plain.mask[joint_index("left_elbow")] and plain.mask.sum() == 16
    assert not flipped.mask[joint_index("right_elbow")] and flipped.mask.sum() == 16
    # Left and right swap places, and X changes sign, in the flipped targets.
    lw, rw = joint_index("left_wrist"), joint_index("right_wrist")
    assert float(flipped.target[rw, 0]) == pytest.approx(-float(plain.target[lw, 0]), abs=1e-5)
    assert float(flipped.target[rw, 1]) == pytest.approx(float(plain.target[lw, 1]), abs=1e-5)


def test_2d_joints_outside_the_crop_are_masked_but_3d_ones_are_not() -> None:
    zoom = CropParams(scale=0.45)  # a tight crop cuts off head and feet
    two_d, three_d = sample_2d(0), sample_3d(0)
    e2, e3 = make_example(two_d, zoom), make_example(three_d, zoom)
    outside2 = (e2.target[:, :2].abs() >= 1).any(-1)
    outside3 = (e3.target[:, :2].abs() >= 1).any(-1)
    assert outside2.any() and outside3.any()
    assert torch.equal(e2.mask, torch.from_numpy(two_d.mask) & ~outside2)
    assert bool(e3.mask.all())
    # 2D-only samples lie on the focal plane: every target depth is 0.
    assert e2.has_depth is False and torch.equal(e2.target[:, 2], torch.zeros(17))


def test_random_examples_are_reproducible_from_their_seed() -> None:
    sample = sample_2d(3)
    a = random_example(sample, example_rng(5, 1, 2))
    b = random_example(sample, example_rng(5, 1, 2))
    c = random_example(sample, example_rng(5, 1, 3))
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert not torch.equal(a.image, c.image)


def test_example_rng_refuses_negative_keys() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        example_rng(0, -1)


def test_colour_draws_follow_the_reference_distributions() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_colour(rng) for _ in range(6000)]
    for name, neutral, (lo, hi) in [
        ("brightness", 1.0, (0.8, 1.2)), ("contrast", 1.0, (0.8, 1.2)),
        ("saturation", 1.0, (0.8, 1.2)), ("hue", 0.0, (-0.1, 0.1)),
    ]:
        values = np.array([getattr(d, name) for d in draws])
        on = values != neutral
        assert on.mean() == pytest.approx(0.3, abs=0.025), name
        assert values[on].min() >= lo and values[on].max() <= hi, name
        assert values[on].mean() == pytest.approx((lo + hi) / 2, abs=0.01), name


def test_colour_jitter_known_values() -> None:
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert apply_colour(grey, ColourParams()) is grey  # the identity touches nothing
    assert (apply_colour(grey, ColourParams(brightness=1.2)) == 120).all()
    # Contrast scales about the image's mean grey, so a flat image stays as it is.
    assert (apply_colour(grey, ColourParams(contrast=0.8)) == 100).all()
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200
    desaturated = apply_colour(red, ColourParams(saturation=0.8))
    assert desaturated[0, 0, 0] < 200 and desaturated[0, 0, 1] > 0
    # A third of a turn takes red to green.
    green = np.asarray(shift_hue(Image.fromarray(red), 1 / 3))
    assert green[0, 0, 1] > 190 and green[0, 0, 0] < 10 and green[0, 0, 2] < 10
    with pytest.raises(ValueError, match="Hue shift"):
        shift_hue(Image.fromarray(red), 0.7)


def test_colour_effects_apply_in_the_reference_order() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    params = ColourParams(brightness=1.15, contrast=0.85, saturation=1.1, hue=0.07)
    pil = Image.fromarray(pixels)
    pil = ImageEnhance.Brightness(pil).enhance(1.15)
    pil = ImageEnhance.Contrast(pil).enhance(0.85)
    pil = ImageEnhance.Color(pil).enhance(1.1)
    expected = np.asarray(shift_hue(pil, 0.07))
    np.testing.assert_array_equal(apply_colour(pixels, params), expected)
    other = ImageEnhance.Brightness(ImageEnhance.Contrast(Image.fromarray(pixels)).enhance(0.85))
    assert not np.array_equal(np.asarray(other.enhance(1.15)),
                              apply_colour(pixels, ColourParams(brightness=1.15, contrast=0.85)))


def test_augmentation_uses_the_sample_family() -> None:
    # The same generator state gives the crop parameters of the sample's own family.
    sample = sample_2d(2)
    example = random_example(sample, example_rng(9, 9))
    params = sample_params(example_rng(9, 9), sample.augmentation)
    expected = make_example(sample, params, sample_colour(_after_params(9, 9, sample)))
    assert torch.equal(example.image, expected.image)


def _after_params(seed: int, key: int, sample: Sample) -> np.random.Generator:
    """A generator advanced past one crop-parameter draw (the colour draw comes next)."""
    rng = example_rng(seed, key)
    sample_params(rng, sample.augmentation)
    return rng


def test_nan_placeholders_of_unlabelled_joints_stay_out_of_the_targets() -> None:
    sample = sample_2d(5)
    pelvis = joint_index("pelvis")
    joints, mask = sample.joints.copy(), sample.mask.copy()
    joints[pelvis], mask[pelvis] = np.nan, False  # an unlabelled root, as a NaN placeholder
    example = make_example(dataclasses.replace(sample, joints=joints, mask=mask))
    plain = make_example(sample)
    assert torch.isfinite(example.target).all() and not example.mask[pelvis]
    assert example.z_ref == pytest.approx(sample.camera.fx)  # the focal plane, as before
    keep = example.mask
    torch.testing.assert_close(example.target[keep], plain.target[keep])
    mask[pelvis] = True
    with pytest.raises(ValueError, match=rf"Labelled joints \[{pelvis}\]"):
        make_example(dataclasses.replace(sample, joints=joints, mask=mask))
