"""Tests for training-time crops: boxes, augmentation draws, targets and rendering."""

import math

import numpy as np
import pytest
from PIL import Image

from posecontract.geometry import Intrinsics, make_crop
from tests.contract.helpers import crop_pixels
from training.camera import (
    AUG_3D,
    AUG_MPII,
    Box,
    CropParams,
    augmented_crop,
    box_around,
    crop_example,
    crop_targets,
    inside_crop,
    lift_to_focal_plane,
    mpii_box,
    mpii_camera,
    ndc_to_camera,
    reference_box,
    render_crop,
    sample_params,
)
from training.skeleton import ROOT, joint_index

CAMERA = Intrinsics(820.0, 790.0, 330.0, 235.0)  # deliberately fx != fy and off-centre
WIDTH, HEIGHT = 640, 480


def _person(depth: float = 4500.0) -> np.ndarray:
    """Return an asymmetric canonical skeleton (17, 3) in camera mm, pelvis at `depth`."""
    offsets = np.array([
        [10, -700, 30], [0, -480, 0], [-180, -470, 20], [-230, -200, 60], [-250, 40, 120],
        [170, -475, -10], [260, -230, -80], [320, -10, -160], [-110, 0, 10], [-130, 380, 90],
        [-120, 760, 40], [100, 5, -10], [150, 400, -120], [160, 800, -60], [0, 0, 0],
        [0, -240, 10], [5, -590, 15],
    ], dtype=np.float64)
    return offsets + np.array([-60.0, 40.0, depth])


def _blob_image(centre_uv: np.ndarray, sigma: float = 2.0) -> Image.Image:
    """Return a black RGB image with a Gaussian spot centred at a continuous pixel position."""
    u = np.arange(WIDTH) + 0.5  # pixel i covers [i, i + 1): its centre is i + 0.5
    v = np.arange(HEIGHT) + 0.5
    spot = np.exp(
        -((u[None, :] - centre_uv[0]) ** 2 + (v[:, None] - centre_uv[1]) ** 2) / (2 * sigma**2)
    )
    grey = np.round(255 * spot).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))


def _centroid(crop_image: np.ndarray) -> np.ndarray:
    """Return the brightness centroid (u, v) of a rendered crop in continuous pixels."""
    weight = crop_image[..., 0].astype(np.float64)
    rows, cols = np.mgrid[: weight.shape[0], : weight.shape[1]]
    return np.array([(weight * (cols + 0.5)).sum(), (weight * (rows + 0.5)).sum()]) / weight.sum()


def test_presets_hold_the_reference_numbers() -> None:
    assert (AUG_3D.flip_prob, AUG_3D.centre_jitter_px) == (0.5, 16.0)
    assert (AUG_3D.scale_min, AUG_3D.scale_max, AUG_3D.log2_scale_std) == (0.9, 1.1, 0.0)
    assert (AUG_3D.rotation_prob, AUG_3D.rotation_std_deg, AUG_3D.rotation_max_deg) == (
        0.4, 30.0, 30.0,
    )
    assert (AUG_MPII.flip_prob, AUG_MPII.centre_jitter_px) == (0.5, 0.0)
    assert AUG_MPII.log2_scale_std == 0.25
    assert math.log2(AUG_MPII.scale_min) == pytest.approx(-0.5)
    assert math.log2(AUG_MPII.scale_max) == pytest.approx(0.5)
    assert (AUG_MPII.rotation_prob, AUG_MPII.rotation_max_deg) == (0.4, 60.0)


def test_3d_draws_follow_the_reference_distributions() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_params(rng, AUG_3D) for _ in range(20000)]
    flips = np.array([d.flip for d in draws])
    jitter = np.array([d.jitter for d in draws])
    scale = np.array([d.scale for d in draws])
    rotation = np.degrees([d.rotation for d in draws])
    assert flips.mean() == pytest.approx(0.5, abs=0.02)
    assert np.abs(jitter).max() <= 16 and np.abs(jitter).max() > 15.9
    assert jitter.std(axis=0) == pytest.approx([32 / math.sqrt(12)] * 2, rel=0.03)
    assert scale.min() >= 0.9 and scale.max() <= 1.1
    assert scale.std() == pytest.approx(0.2 / math.sqrt(12), rel=0.03)
    assert (rotation != 0).mean() == pytest.approx(0.4, abs=0.02)
    assert np.abs(rotation).max() == pytest.approx(30.0)  # clipped at 30 degrees
    assert np.mean(rotation > 0) == pytest.approx(np.mean(rotation < 0), abs=0.02)


def test_mpii_draws_follow_the_reference_distributions() -> None:
    rng = np.random.default_rng(1)
    draws = [sample_params(rng, AUG_MPII) for _ in range(20000)]
    log2_scale = np.log2([d.scale for d in draws])
    rotation = np.degrees([d.rotation for d in draws])
    assert all(d.jitter == (0.0, 0.0) for d in draws)
    assert log2_scale.min() == pytest.approx(-0.5) and log2_scale.max() == pytest.approx(0.5)
    # N(0, 0.25) clipped (not truncated) at two standard deviations: 4.6% of the draws sit on
    # the bounds, and the spread is 0.96 of the unclipped one.
    assert np.mean(np.abs(log2_scale) > 0.4999) == pytest.approx(0.0455, abs=0.005)
    assert log2_scale.std() == pytest.approx(0.25 * 0.9595, rel=0.03)
    assert np.abs(rotation).max() == pytest.approx(60.0)
    assert (np.abs(rotation) > 30).any()


def test_draws_are_reproducible_from_the_generator() -> None:
    a = [sample_params(np.random.default_rng(7), AUG_3D) for _ in range(2)]
    assert a[0] == a[1]


def test_reference_box_frames_the_projected_joints() -> None:
    joints = _person()
    uv = CAMERA.project(joints)
    box = reference_box(CAMERA, joints)
    low, high = uv.min(axis=0), uv.max(axis=0)
    np.testing.assert_allclose(box.centre, (low + high) / 2)
    assert box.side == pytest.approx(1.5 * (high - low).max())
    # The person is taller than wide, so the height sets the side.
    assert box.side == pytest.approx(1.5 * (high[1] - low[1]))


def test_box_around_known_points() -> None:
    box = box_around(np.array([[10.0, 20.0], [50.0, 100.0], [30.0, 60.0]]))
    assert box == Box((30.0, 60.0), 120.0)
    with pytest.raises(ValueError, match="span no area"):
        box_around(np.array([[5.0, 5.0], [5.0, 5.0]]))
    with pytest.raises(ValueError, match=r"shape \(N, 2\) with N >= 1, got \(3,\)"):
        box_around(np.array([1.0, 2.0, 3.0]))


def test_reference_box_rejects_points_behind_the_camera() -> None:
    joints = _person()
    joints[3, 2] = -10.0
    with pytest.raises(ValueError, match="in front of the camera"):
        reference_box(CAMERA, joints)


def test_mpii_box_camera_and_pseudo_3d() -> None:
    assert mpii_box((400.0, 300.0), 2.0) == Box((400.0, 330.0), 500.0)
    camera = mpii_camera(1280, 720)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (1536.0, 1536.0, 640.0, 360.0)
    uv = np.array([[100.0, 50.0], [640.0, 360.0], [1279.0, 719.0]])
    points = lift_to_focal_plane(uv, camera)
    np.testing.assert_allclose(points[:, 2], 1536.0)
    np.testing.assert_allclose(points[:, :2], uv - [640.0, 360.0])
    np.testing.assert_allclose(camera.project(points), uv)


def test_mpii_targets_lie_on_the_root_plane() -> None:
    camera = mpii_camera(WIDTH, HEIGHT)
    joints = lift_to_focal_plane(CAMERA.project(_person()), camera)
    params = CropParams(scale=1.2, rotation=0.4, flip=True)
    crop = augmented_crop(camera, reference_box(camera, joints), params)
    _, target, z_ref = crop_targets(joints, crop)
    assert z_ref == pytest.approx(camera.fx)
    np.testing.assert_allclose(target[:, 2], 0.0, atol=1e-12)


def test_augmented_crop_applies_jitter_scale_rotation_and_flip() -> None:
    box = Box((300.0, 250.0), 200.0)
    params = CropParams(jitter=(12.0, -5.0), scale=1.1, rotation=0.3, flip=True)
    crop = augmented_crop(CAMERA, box, params, size=128)
    expected = make_crop(CAMERA, (312.0, 245.0), 220.0, 128, 0.3, True)
    np.testing.assert_allclose(crop.pixel_matrix, expected.pixel_matrix)
    np.testing.assert_allclose(crop.point_matrix, expected.point_matrix)
    assert crop.flipped and crop.size == 128


@pytest.mark.parametrize("flip", [False, True])
def test_targets_match_crop_pixels_and_put_the_root_at_zero(flip: bool) -> None:
    joints = _person()
    params = CropParams(rotation=0.2, flip=flip)
    crop = augmented_crop(CAMERA, reference_box(CAMERA, joints), params)
    moved, target, z_ref = crop_targets(joints, crop)
    assert z_ref == pytest.approx(joints[ROOT, 2])
    assert target[ROOT, 2] == pytest.approx(0.0, abs=1e-12)
    # Normalised x, y are crop pixels with the crop edges at -1 and +1.
    pixels = crop_pixels(crop, CAMERA.project(joints))
    order = [joint_index(n) for n in ("left_wrist", "right_wrist")]
    if flip:  # the mirrored left wrist is now the right wrist, and vice versa
        order = order[::-1]
    np.testing.assert_allclose(
        (target[order, :2] + 1) * crop.size / 2, pixels[[7, 4]], atol=1e-9
    )
    # Farther than the root gives positive z, nearer negative.
    np.testing.assert_array_equal(np.sign(target[:, 2]), np.sign(np.round(moved[:, 2] - z_ref, 6)))


def test_flipped_crops_mirror_left_and_right() -> None:
    joints = _person()
    box = reference_box(CAMERA, joints)
    _, plain, _ = crop_targets(joints, augmented_crop(CAMERA, box, CropParams()))
    _, mirrored, _ = crop_targets(joints, augmented_crop(CAMERA, box, CropParams(flip=True)))
    # The left wrist is on the image's right (x > 0); mirrored, it sits at -x as the right wrist.
    lw, rw = joint_index("left_wrist"), joint_index("right_wrist")
    assert plain[lw, 0] > 0
    np.testing.assert_allclose(mirrored[rw], plain[lw] * [-1, 1, 1], atol=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_ndc_to_camera_undoes_crop_targets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    joints = _person(depth=rng.uniform(2500, 8000)) + rng.normal(scale=30, size=(17, 3))
    params = sample_params(rng, AUG_3D)
    crop = augmented_crop(CAMERA, reference_box(CAMERA, joints), params)
    _, target, z_ref = crop_targets(joints, crop)
    np.testing.assert_allclose(ndc_to_camera(target, crop, z_ref), joints, atol=1e-6)
    batch = ndc_to_camera(np.stack([target, target]), crop, z_ref)
    np.testing.assert_allclose(batch[1], joints, atol=1e-6)


def test_crop_targets_rejects_the_wrong_shape() -> None:
    crop = make_crop(CAMERA, (300.0, 200.0), 300.0)
    with pytest.raises(ValueError, match=r"shape \(17, 3\), got \(16, 3\)"):
        crop_targets(np.ones((16, 3)), crop)


def test_inside_crop_is_strict() -> None:
    target = np.zeros((2, 17, 3))
    target[0, 3, 0] = 1.0
    target[1, 5, 1] = -1.2
    target[1, 6, 0] = 0.999
    mask = inside_crop(target)
    assert mask.shape == (2, 17)
    assert set(np.flatnonzero(~mask[0])) == {3} and set(np.flatnonzero(~mask[1])) == {5}


@pytest.mark.parametrize(
    ("scale", "rotation", "flip"),
    [(1.0, 0.0, False), (1.0, 0.5, False), (1.3, -0.6, True), (0.3, 0.0, True), (0.3, 1.0, False)],
)
def test_rendered_crop_shows_a_joint_at_its_target(scale: float, rotation: float, flip: bool):
    joints = _person()
    lw = joint_index("left_wrist")
    image = _blob_image(CAMERA.project(joints[lw]))
    box = reference_box(CAMERA, joints)  # about 320 source px, so scale 0.3 zooms in ~2.7x
    example = crop_example(image, CAMERA, joints, CropParams((3.0, -4.0), scale, rotation, flip))
    assert example.image.shape == (256, 256, 3) and example.image.dtype == np.uint8
    assert example.crop.size == 256 and example.z_ref == pytest.approx(joints[ROOT, 2])
    assert example.crop.camera.fx == pytest.approx(CAMERA.fx * 256 / (box.side * scale))
    shown_as = joint_index("right_wrist") if flip else lw
    expected = (example.target[shown_as, :2] + 1) * 128
    np.testing.assert_allclose(expected, example.crop.camera.project(example.joints[shown_as]))
    # A half-pixel slip in either image would move the spot by >= 0.5 crop px here.
    np.testing.assert_allclose(_centroid(example.image), expected, atol=0.15)


def test_rendered_crop_turns_and_mirrors_the_right_way() -> None:
    # A spot 40 px right of the box centre, in a 1:1 crop (160 source px -> 160 crop px).
    image = _blob_image(np.array([340.0, 230.0]))
    centre = (300.0, 230.0)
    turned = render_crop(image, make_crop(CAMERA, centre, 160.0, 160, rotation=math.pi / 2))
    # Counter-clockwise on screen: right of centre goes to above centre (rows grow down).
    np.testing.assert_allclose(_centroid(turned), [80.0, 40.0], atol=0.1)
    mirrored = render_crop(image, make_crop(CAMERA, centre, 160.0, 160, flip=True))
    np.testing.assert_allclose(_centroid(mirrored), [40.0, 80.0], atol=0.1)
    plain = render_crop(image, make_crop(CAMERA, centre, 160.0, 160), supersample=1)
    # 1:1 and axis-aligned: the spot keeps its sub-pixel position, 0.5 px offsets and all.
    np.testing.assert_allclose(_centroid(plain), [120.0, 80.0], atol=0.05)


def test_rendering_is_black_outside_the_source_image() -> None:
    image = Image.new("L", (WIDTH, HEIGHT), 200)  # grey, and not RGB: converted on the way
    # A 1:1 crop whose left 100 columns fall left of the source image.
    crop = make_crop(CAMERA, (28.0, 240.0), 256.0, 256)
    out = render_crop(image, crop)
    assert out.shape == (256, 256, 3)
    # Lanczos rings for a few pixels either side of the edge at column 100.
    assert out[:, :96].max() == 0
    assert (out[:, 104:] == 200).all()
    with pytest.raises(ValueError, match="positive integer, got 0"):
        render_crop(image, crop, supersample=0)
