"""Tests for the response renderer: PNG size, where the 2D, 3D and heatmap drawings land."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from poseapi.render import (
    HEAD_TOP,
    LEFT,
    MARKER,
    PERSON_COLOURS,
    RIGHT,
    Scene,
    ScenePerson,
    colourise,
    render_pose_png,
    side_colour,
    view_matrix,
)
from posecontract.skeleton import JOINT_NAMES

WIDTH, HEIGHT = 640, 480
FOCAL, ROOT_DEPTH = 1000.0, 4000.0
SIZE = 256

# A person standing and facing the camera, root-relative camera mm (X right, Y down, Z
# forward): their left side is on the image's right (+X), the head up (-Y), feet down (+Y).
STANDING_MM = {
    "head_top": (0, -750, 0), "neck": (0, -500, 0),
    "right_shoulder": (-180, -480, 0), "right_elbow": (-220, -220, 0),
    "right_wrist": (-230, 20, 0), "left_shoulder": (180, -480, 0),
    "left_elbow": (220, -220, 0), "left_wrist": (230, 20, 0),
    "right_hip": (-100, 0, 0), "right_knee": (-110, 440, 20), "right_ankle": (-110, 870, 0),
    "left_hip": (100, 0, 0), "left_knee": (110, 440, 20), "left_ankle": (110, 870, 0),
    "pelvis": (0, 0, 0), "spine": (0, -250, 0), "head": (0, -620, 0),
}


def make_person(shift_x_mm: float = 0.0) -> ScenePerson:
    """A standing person at ROOT_DEPTH, with pixels projected through the pinhole."""
    rel = np.array([STANDING_MM[name] for name in JOINT_NAMES], dtype=float)
    cam = rel + (shift_x_mm, 0.0, ROOT_DEPTH)
    pixels = np.stack([FOCAL * cam[:, 0] / cam[:, 2] + WIDTH / 2,
                       FOCAL * cam[:, 1] / cam[:, 2] + HEIGHT / 2], axis=-1)
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    return ScenePerson(box=(lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]), pixels=pixels,
                       relative_mm=rel, normalised=np.zeros((len(JOINT_NAMES), 3)))


def make_response(persons: list[ScenePerson]) -> Scene:
    return Scene(WIDTH, HEIGHT, persons)


def blank_image() -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), (100, 100, 100))


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def where(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(N, 2) row, column of the pixels of exactly `colour`."""
    return np.argwhere((pixels == np.array(colour, dtype=np.uint8)).all(axis=-1))


def test_png_has_one_square_panel_per_view():
    response = make_response([make_person()])
    assert decode(render_pose_png(blank_image(), response, size=SIZE)).shape == (SIZE, 2 * SIZE, 3)
    maps = np.full((3, 17, 32, 32), 1 / 1024, dtype=np.float32)
    out = decode(render_pose_png(blank_image(), response, heatmaps=maps, size=SIZE))
    assert out.shape == (SIZE, 3 * SIZE, 3)


def test_image_panel_draws_joints_where_they_project():
    person = make_person()
    out = decode(render_pose_png(blank_image(), make_response([person]), size=SIZE))
    panel = out[:, :SIZE]
    # The image is scaled to fit and centred: 640x480 -> 256x192, 32 rows above it.
    scale, top = SIZE / WIDTH, (SIZE - HEIGHT * SIZE / WIDTH) / 2
    for name in ("left_ankle", "right_wrist", "head_top"):
        u, v = person.pixels[JOINT_NAMES.index(name)]
        found = where(panel, side_colour(name))
        distance = np.hypot(found[:, 1] - u * scale, found[:, 0] - (v * scale + top)).min()
        assert distance <= 2, name
    # Nothing skeleton-coloured in the image's empty top-left corner.
    corner = panel[int(top) + 20:int(top) + 60, :60]
    for colour in (LEFT, RIGHT, side_colour("neck")):
        assert len(where(corner, colour)) == 0


def test_view_panel_stands_the_person_upright():
    out = decode(render_pose_png(blank_image(), make_response([make_person()]), size=SIZE))
    panel = out[:, SIZE:2 * SIZE]
    head = where(panel, HEAD_TOP)
    head = head[head[:, 0] > 40]  # below the title and legend bands
    assert len(head) > 0
    # For a standing person the lowest left and right joints are the ankles.
    for colour in (LEFT, RIGHT):
        lowest = where(panel, colour)[:, 0].max()
        assert lowest - head[:, 0].mean() > SIZE / 3


def test_view_matrix_is_a_rotation_and_keeps_up_up():
    rot = view_matrix()
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(view_matrix(0.0, 0.0), np.eye(3), atol=1e-12)
    assert (rot @ [0.0, -1.0, 0.0])[1] < 0  # camera "up" (-Y) stays up on screen


def test_several_persons_have_their_own_colour_in_3d():
    response = make_response([make_person(-800.0), make_person(800.0)])
    panel = decode(render_pose_png(blank_image(), response, size=SIZE))[:, SIZE:2 * SIZE]
    for colour in PERSON_COLOURS[:2]:
        assert len(where(panel, colour)) > 20


def test_heatmap_marker_sits_on_the_peak_cell():
    # One-hot maps at known cells, and a prediction at exactly those cell centres.
    col_x, row_y, z = 20, 5, 10
    maps = np.zeros((3, 17, 32, 32), dtype=np.float32)
    j = JOINT_NAMES.index("left_wrist")
    maps[0, j, row_y, col_x] = 1.0  # xy: rows y, columns x
    maps[1, j, row_y, z] = 1.0      # zy: rows y, columns z
    maps[2, j, z, col_x] = 1.0      # xz: rows z, columns x
    person = make_person()
    centre = lambda cell: (2 * cell + 1) / 32 - 1  # noqa: E731
    person.normalised[j] = (centre(col_x), centre(row_y), centre(z))
    out = decode(render_pose_png(blank_image(), make_response([person]), joint="left_wrist",
                                 heatmaps=maps, size=SIZE))
    panel = out[:, 2 * SIZE:]
    half = SIZE // 2
    # Documented layout: xy top left, zy top right, xz bottom left.
    quadrants = {(0, 0): (col_x, row_y), (0, half): (z, row_y), (half, 0): (col_x, z)}
    low = tuple(int(c) for c in colourise(np.zeros((1, 1)))[0, 0])
    for (r0, c0), (col, row) in quadrants.items():
        quad = panel[r0:r0 + half, c0:c0 + half]
        tile = where(quad, low)  # a one-hot map is all lowest colour but one cell
        top, left = tile.min(axis=0)
        side = tile.max(axis=0) - tile.min(axis=0) + 1
        assert side[0] == side[1] and side[0] % 32 == 0
        cell = side[0] / 32
        expected = np.array([top + (row + 0.5) * cell, left + (col + 0.5) * cell])
        marker = where(quad, MARKER)
        np.testing.assert_allclose(marker.mean(axis=0), expected, atol=1.5)


def test_zero_persons_still_renders():
    response = make_response([])
    out = decode(render_pose_png(blank_image(), response, size=SIZE))
    assert out.shape == (SIZE, 2 * SIZE, 3)
    maps = np.zeros((3, 17, 32, 32), dtype=np.float32)
    out = decode(render_pose_png(blank_image(), response, heatmaps=maps, size=SIZE))
    assert out.shape == (SIZE, 3 * SIZE, 3)
    assert len(where(out[:, 2 * SIZE:], MARKER)) == 0  # no prediction to mark


def test_unknown_joint_lists_the_allowed_names():
    with pytest.raises(ValueError, match="Unknown joint 'wrist'.*left_wrist"):
        render_pose_png(blank_image(), make_response([]), joint="wrist")


def test_bad_heatmap_shape_is_refused():
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(3, 17, H, W\)"):
        render_pose_png(blank_image(), make_response([]), heatmaps=np.zeros((17, 32, 32)))
