"""Known-value and property tests for posecontract.geometry."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posecontract.geometry import (
    KNEE_NECK_MM,
    CropChain,
    Intrinsics,
    crop_points,
    denormalise,
    knee_neck_length,
    make_crop,
    normalise,
    root_depth_from_scale,
    uncrop_pixels,
    uncrop_points,
)
from posecontract.skeleton import FLIP_PERMUTATION, NUM_JOINTS, ROOT
from tests.contract.helpers import bone_length_ratio, crop_pixels

# The published normaliser test vector (pose3d-utils), a 2048 x 2048 MPI-INF-3DHP camera.
VECTOR_CAMERA = Intrinsics(1490.952, 1491.108, 987.6075, 1019.069)


def _skeleton(depth: float = 4500.0, knee_neck: float = KNEE_NECK_MM) -> np.ndarray:
    """Return a standing, left/right-asymmetric canonical skeleton (17, 3) in camera mm with
    its pelvis at `depth` and knee-neck length `knee_neck`."""
    joints = np.array([
        [10, -700, 30],     # head_top
        [0, -480, 0],       # neck
        [-180, -470, 20],   # right_shoulder
        [-230, -200, 60],   # right_elbow
        [-250, 40, 120],    # right_wrist
        [170, -475, -10],   # left_shoulder
        [260, -230, -80],   # left_elbow
        [300, -10, -160],   # left_wrist
        [-110, 0, 10],      # right_hip
        [-130, 380, 90],    # right_knee
        [-120, 760, 40],    # right_ankle
        [100, 5, -10],      # left_hip
        [150, 400, -120],   # left_knee (a longer, bent left thigh: not mirror-symmetric)
        [160, 800, -60],    # left_ankle
        [0, 0, 0],          # pelvis
        [0, -240, 10],      # spine
        [5, -590, 15],      # head
    ], dtype=np.float64)
    joints *= knee_neck / knee_neck_length(joints)
    return joints + np.array([150.0, 120.0, depth])


def _random_chain(rng: np.random.Generator) -> CropChain:
    """Return a random sequence of one to eight crop steps applied to a random camera."""
    camera = Intrinsics(*rng.uniform(400, 2000, 2), *rng.uniform(100, 1000, 2))
    chain = CropChain.start(camera, tuple(rng.uniform(200, 2000, 2)))
    for _ in range(rng.integers(1, 9)):
        chain = _random_chain_step(chain, rng)
    return chain


def _random_points(rng: np.random.Generator, n: int = 20) -> np.ndarray:
    """Return camera-space points (n, 3) in mm, in front of the camera."""
    return np.column_stack([rng.uniform(-2000, 2000, (n, 2)), rng.uniform(1000, 9000, n)])


def test_normaliser_reproduces_published_vector() -> None:
    point = np.array([56.41, -410.53, 3966.66])
    ndc = normalise(point, VECTOR_CAMERA, 3992.29, 2048, 2048)
    np.testing.assert_allclose(ndc, [0.0215, -0.1514, -0.0127], atol=1e-3)


def test_depth_range_spans_s_asymmetrically() -> None:
    # z_ref = 4000 mm, s = 2500 mm: z = -1 at 3108 mm and +1 at 5608 mm, root at 0.
    camera = Intrinsics(4000.0 / 2500.0 * 256, 4000.0 / 2500.0 * 256, 128, 128)
    depths = np.array([[0, 0, 3108.0], [0, 0, 4000.0], [0, 0, 5608.0]])
    z = normalise(depths, camera, 4000.0, 256, 256)[:, 2]
    np.testing.assert_allclose(z, [-1, 0, 1], atol=1e-3)
    # Farther is +z, and 500 mm either side of the root is not symmetric.
    near_far = normalise(np.array([[0, 0, 4500.0], [0, 0, 3500.0]]), camera, 4000.0, 256, 256)
    np.testing.assert_allclose(near_far[:, 2], [0.39, -0.50], atol=5e-3)


@settings(max_examples=200, deadline=None)
@given(
    xy=st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000)),
    depth=st.floats(300, 20000),
    z_ref=st.floats(500, 15000),
    focal=st.tuples(st.floats(100, 5000), st.floats(100, 5000)),
    centre=st.tuples(st.floats(10, 2000), st.floats(10, 2000)),
)
def test_denormalise_inverts_normalise(xy, depth, z_ref, focal, centre) -> None:
    camera = Intrinsics(*focal, *centre)
    point = np.array([xy[0], xy[1], depth])
    back = denormalise(normalise(point, camera, z_ref, 256, 300), camera, z_ref, 256, 300)
    np.testing.assert_allclose(back, point, rtol=0, atol=1e-6)


def test_crop_camera_ndc_edges_are_the_crop_edges() -> None:
    crop = make_crop(VECTOR_CAMERA, (900.0, 1100.0), 600.0, 256)
    # Points that project onto the crop's left/top edge (u = 0) and right edge (u = 256).
    edge_pixels = np.array([[0.0, 0.0], [256.0, 256.0], [128.0, 128.0]])
    z = 4000.0
    points = np.column_stack([
        (edge_pixels[:, 0] - crop.camera.cx) * z / crop.camera.fx,
        (edge_pixels[:, 1] - crop.camera.cy) * z / crop.camera.fy,
        np.full(3, z),
    ])
    ndc = normalise(points, crop.camera, z, crop.size, crop.size)
    np.testing.assert_allclose(ndc[:, :2], [[-1, -1], [1, 1], [0, 0]], atol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_untransform_to_the_identity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    chain = _random_chain(rng)
    points = _random_points(rng)
    moved = points @ chain.point_matrix.T
    np.testing.assert_allclose(moved @ np.linalg.inv(chain.point_matrix).T, points, atol=1e-6)
    uv = np.column_stack([rng.uniform(0, 2000, (20, 2)), np.ones(20)])
    back = (uv @ chain.pixel_matrix.T) @ np.linalg.inv(chain.pixel_matrix).T
    np.testing.assert_allclose(back, uv, atol=1e-6)
    # No step changes depth.
    np.testing.assert_allclose(moved[:, 2], points[:, 2], rtol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_keep_projection_consistent(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    start = Intrinsics(*rng.uniform(400, 2000, 2), *rng.uniform(100, 1000, 2))
    chain = CropChain.start(start, (2000.0, 2000.0))
    points = _random_points(rng)
    for _ in range(8):  # check after every step, not just at the end
        chain = _random_chain_step(chain, rng)
        projected_then_mapped = start.project(points)
        homog = np.column_stack([projected_then_mapped, np.ones(len(points))])
        mapped = (homog @ chain.pixel_matrix.T)[:, :2]
        np.testing.assert_allclose(
            chain.camera.project(points @ chain.point_matrix.T), mapped, atol=1e-6
        )


def _random_chain_step(chain: CropChain, rng: np.random.Generator) -> CropChain:
    """Return `chain` with one random step appended."""
    step = rng.integers(6)
    if step == 0:
        return chain.pan(tuple(rng.uniform(0, 2000, 2)))
    if step == 1:
        return chain.rotate(rng.uniform(-math.pi, math.pi))
    if step == 2:
        return chain.zoom(rng.uniform(0.2, 5.0))
    if step == 3:
        return chain.flip()
    if step == 4:
        return chain.square_crop(rng.uniform(50, 1000))
    return chain.resize(rng.uniform(50, 1000), rng.uniform(50, 1000))


def test_steps_move_known_pixels() -> None:
    camera = Intrinsics(1000.0, 1000.0, 300.0, 200.0)
    start = CropChain.start(camera, (600.0, 400.0))

    def where(chain: CropChain, uv: tuple[float, float]) -> np.ndarray:
        return (chain.pixel_matrix @ np.array([uv[0], uv[1], 1.0]))[:2]

    # Pan puts the chosen pixel on the principal point; the camera is unchanged.
    panned = start.pan((350.0, 180.0))
    np.testing.assert_allclose(where(panned, (350.0, 180.0)), [300.0, 200.0])
    # A quarter turn counter-clockwise on screen sends "right of centre" to "above centre".
    turned = start.rotate(math.pi / 2)
    np.testing.assert_allclose(where(turned, (310.0, 200.0)), [300.0, 190.0], atol=1e-12)
    # Flip mirrors about the principal point's column.
    np.testing.assert_allclose(where(start.flip(), (310.0, 205.0)), [290.0, 205.0])
    assert start.flip().flipped and not start.flip().flip().flipped
    # Zoom scales about the principal point and scales the focal lengths.
    zoomed = start.zoom(2.0)
    np.testing.assert_allclose(where(zoomed, (310.0, 195.0)), [320.0, 190.0])
    assert (zoomed.camera.fx, zoomed.camera.cx) == (2000.0, 300.0)
    # A square crop centres its window on the principal point.
    cut = start.square_crop(100.0)
    np.testing.assert_allclose(where(cut, (250.0, 150.0)), [0.0, 0.0])
    assert (cut.camera.cx, cut.camera.cy, cut.image_size) == (50.0, 50.0, (100.0, 100.0))
    # A resize maps image edges to image edges (no half-pixel shift).
    resized = start.resize(300.0, 800.0)
    np.testing.assert_allclose(where(resized, (600.0, 400.0)), [300.0, 800.0])
    assert (resized.camera.fx, resized.camera.fy) == (500.0, 2000.0)


def test_pan_shears_points_onto_the_optical_axis() -> None:
    camera = Intrinsics(1200.0, 1100.0, 500.0, 400.0)
    ray = np.array([(700.0 - 500.0) / 1200.0, (250.0 - 400.0) / 1100.0, 1.0]) * 3000.0
    moved = CropChain.start(camera).pan((700.0, 250.0)).point_matrix @ ray
    np.testing.assert_allclose(moved, [0.0, 0.0, 3000.0], atol=1e-9)


def _closed_form_pixel_matrix(centre, side, size, rotation, flip) -> np.ndarray:
    """Return the crop's pixel map written out in one piece (the pre-refactor closed form)."""
    c, s = math.cos(rotation), math.sin(rotation)
    a = np.diag([-1.0 if flip else 1.0, 1.0]) @ np.array([[c, s], [-s, c]]) * (size / side)
    matrix = np.eye(3)
    matrix[:2, :2] = a
    matrix[:2, 2] = size / 2 - a @ np.asarray(centre)
    return matrix


@pytest.mark.parametrize("rotation", [0.0, 0.4, -2.5])
@pytest.mark.parametrize("flip", [False, True])
def test_make_crop_equals_closed_form(rotation: float, flip: bool) -> None:
    camera = Intrinsics(1100.0, 1300.0, 480.0, 530.0)
    centre, side, size = (620.0, 410.0), 375.0, 256
    crop = make_crop(camera, centre, side, size, rotation, flip)
    assert crop.size == size and crop.flipped == flip
    np.testing.assert_allclose(
        [crop.camera.fx, crop.camera.fy], [1100.0 * size / side, 1300.0 * size / side]
    )
    assert (crop.camera.cx, crop.camera.cy) == (size / 2, size / 2)
    np.testing.assert_allclose(
        crop.pixel_matrix, _closed_form_pixel_matrix(centre, side, size, rotation, flip),
        atol=1e-9,
    )
    np.testing.assert_allclose(crop_pixels(crop, centre), [size / 2, size / 2], atol=1e-9)


def test_make_crop_maps_box_corners_to_crop_corners() -> None:
    crop = make_crop(VECTOR_CAMERA, (1000.0, 800.0), 400.0, 256)
    corners = np.array([[800.0, 600.0], [1200.0, 600.0], [800.0, 1000.0], [1200.0, 1000.0]])
    np.testing.assert_allclose(
        crop_pixels(crop, corners), [[0, 0], [256, 0], [0, 256], [256, 256]], atol=1e-9
    )
    np.testing.assert_allclose(uncrop_pixels(crop, crop_pixels(crop, corners)), corners)
    # Mirrored, the left edge of the box becomes the right edge of the crop.
    flipped = make_crop(VECTOR_CAMERA, (1000.0, 800.0), 400.0, 256, flip=True)
    np.testing.assert_allclose(
        crop_pixels(flipped, corners), [[256, 0], [0, 0], [256, 256], [0, 256]], atol=1e-9
    )


def test_make_crop_equals_the_reference_step_order() -> None:
    # The reference: pan, rotate, zoom to fill the short side, flip, square crop, resize.
    camera = Intrinsics(1145.0, 1143.8, 512.5, 515.4)
    width, height, centre, side = 1000.0, 1002.0, (470.0, 530.0), 420.0
    chain = (
        CropChain.start(camera, (width, height))
        .pan(centre).rotate(0.3).zoom(width / side).flip()
        .square_crop(width).resize(256, 256)
    )
    expected = make_crop(camera, centre, side, 256, 0.3, True)
    got = chain.to_crop()
    np.testing.assert_allclose(got.pixel_matrix, expected.pixel_matrix, atol=1e-9)
    np.testing.assert_allclose(got.point_matrix, expected.point_matrix, atol=1e-12)
    np.testing.assert_allclose(
        [got.camera.fx, got.camera.fy, got.camera.cx, got.camera.cy],
        [expected.camera.fx, expected.camera.fy, 128, 128],
    )


def test_crop_points_round_trip_and_keep_depth() -> None:
    crop = make_crop(VECTOR_CAMERA, (900.0, 1200.0), 500.0, 256, rotation=0.7, flip=True)
    points = _random_points(np.random.default_rng(3))
    moved = crop_points(crop, points)
    np.testing.assert_allclose(moved[:, 2], points[:, 2])
    np.testing.assert_allclose(uncrop_points(crop, moved), points, atol=1e-9)
    np.testing.assert_allclose(
        crop.camera.project(moved), crop_pixels(crop, VECTOR_CAMERA.project(points)), atol=1e-9
    )


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (0.5, True), (-0.3, False)])
def test_root_depth_from_knee_neck_prior(rotation: float, flip: bool) -> None:
    joints = _skeleton(depth=4500.0)
    uv = VECTOR_CAMERA.project(joints)
    centre = tuple(0.5 * (uv.min(0) + uv.max(0)))
    crop = make_crop(VECTOR_CAMERA, centre, 1.5 * np.ptp(uv, axis=0).max(), 256, rotation, flip)
    moved = crop_points(crop, joints)
    if flip:
        moved = moved[list(FLIP_PERMUTATION)]
    ndc = normalise(moved, crop.camera, moved[ROOT, 2], crop.size, crop.size)
    depth = root_depth_from_scale(ndc, crop)
    assert depth == pytest.approx(4500.0, rel=1e-6)
    # The bone-length variant against the skeleton itself gives the same depth.
    by_bones = root_depth_from_scale(ndc, crop, bone_length_ratio(joints), target=1.0)
    assert by_bones == pytest.approx(4500.0, rel=1e-6)


def test_root_depth_scales_with_the_prior() -> None:
    joints = _skeleton(depth=3000.0, knee_neck=1000.0)
    crop = make_crop(VECTOR_CAMERA, tuple(VECTOR_CAMERA.project(joints[ROOT])), 700.0)
    moved = crop_points(crop, joints)
    ndc = normalise(moved, crop.camera, 3000.0, 256, 256)
    # Assuming 920 mm for a 1000 mm person puts them 8% nearer.
    assert root_depth_from_scale(ndc, crop) == pytest.approx(3000.0 * 0.92, rel=1e-9)
    batch = np.stack([ndc, ndc])
    assert root_depth_from_scale(batch, crop).shape == (2,)


def test_root_depth_rejects_a_collapsed_skeleton() -> None:
    crop = make_crop(VECTOR_CAMERA, (1000.0, 1000.0), 500.0)
    with pytest.raises(ValueError, match="zero or undefined size"):
        root_depth_from_scale(np.zeros((NUM_JOINTS, 3)), crop)


def test_invalid_steps_name_the_bad_value() -> None:
    start = CropChain.start(VECTOR_CAMERA)
    with pytest.raises(ValueError, match="side must be a positive number of pixels, got -3"):
        make_crop(VECTOR_CAMERA, (0.0, 0.0), -3.0)
    with pytest.raises(ValueError, match="Zoom factor must be a positive finite number, got 0"):
        start.zoom(0.0)
    with pytest.raises(ValueError, match="resize needs a known image size"):
        start.resize(256, 256)
    with pytest.raises(ValueError, match="square of whole pixels, got 100.5 x 100.5"):
        start.square_crop(100.5).to_crop()
    with pytest.raises(ValueError, match="square of whole pixels, got 100.0 x 50"):
        start.square_crop(100.0).resize(100.0, 50).to_crop()
