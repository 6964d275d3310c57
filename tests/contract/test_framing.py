"""posecontract.framing: the whole body's crop from the seen joints of one pass."""

from __future__ import annotations

import numpy as np
import pytest

from posecontract.framing import (
    BODY_TEMPLATE,
    MAX_SCALE,
    MIN_FIT_JOINTS,
    Frame,
    crop_side,
    frame_crop,
    full_body_frame,
)
from posecontract.geometry import Intrinsics, make_crop, uncrop_pixels
from posecontract.skeleton import FLIP_PERMUTATION, NUM_JOINTS, joint_index

UPPER = [joint_index(n) for n in ("head_top", "head", "neck", "right_shoulder",
                                  "left_shoulder", "spine")]


def test_the_template_is_an_upright_symmetric_body_inside_its_crop():
    mirrored = BODY_TEMPLATE[list(FLIP_PERMUTATION)] * [-1, 1]
    np.testing.assert_allclose(mirrored, BODY_TEMPLATE, atol=1e-12)
    head, ankle = BODY_TEMPLATE[joint_index("head_top"), 1], BODY_TEMPLATE[joint_index(
        "left_ankle"), 1]
    assert head < BODY_TEMPLATE[joint_index("neck"), 1] < BODY_TEMPLATE[joint_index("pelvis"), 1]
    assert ankle - head == pytest.approx(2 / 1.5, abs=0.01)  # the reference box's margin
    assert np.abs(BODY_TEMPLATE).max() < 1


def test_a_whole_body_at_the_template_is_its_own_frame():
    frame = full_body_frame(BODY_TEMPLATE, np.ones(NUM_JOINTS))
    assert frame.scale == pytest.approx(1, abs=1e-12)
    assert frame.centre == pytest.approx((0, 0), abs=1e-12)


@pytest.mark.parametrize("scale,shift", [(2.4, (0.05, 0.9)), (1.3, (-0.2, 0.3)), (0.7, (0, 0))])
def test_the_seen_upper_body_gives_back_the_scale_and_shift_it_was_drawn_with(scale, shift):
    rng = np.random.default_rng(3)
    coords = rng.uniform(-1, 1, (NUM_JOINTS, 3))  # unseen joints: anything
    coords[UPPER, :2] = scale * BODY_TEMPLATE[UPPER] + shift
    visibility = np.full(NUM_JOINTS, 0.2)
    visibility[UPPER] = 0.9
    frame = full_body_frame(coords, visibility)
    assert frame.scale == pytest.approx(scale, rel=1e-12)
    assert frame.centre == pytest.approx(shift, abs=1e-12)
    # a lower threshold takes the "unseen" joints in, and the fit moves
    assert full_body_frame(coords, visibility, threshold=0.1) != frame


def test_too_few_seen_joints_or_an_absurd_scale_give_no_frame():
    visibility = np.zeros(NUM_JOINTS)
    visibility[UPPER[:MIN_FIT_JOINTS - 1]] = 1
    assert full_body_frame(BODY_TEMPLATE, visibility) is None
    visibility[UPPER] = 1
    assert full_body_frame(BODY_TEMPLATE * (MAX_SCALE + 0.5), visibility) is None
    assert full_body_frame(-BODY_TEMPLATE, visibility) is None  # upside down: no positive scale
    assert full_body_frame(np.zeros((NUM_JOINTS, 2)), visibility) is None  # all in one point


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="coords must have shape"):
        full_body_frame(np.zeros((16, 2)), np.ones(NUM_JOINTS))
    with pytest.raises(ValueError, match="visibility must have shape"):
        full_body_frame(BODY_TEMPLATE, np.ones(16))


def test_a_frame_becomes_the_crop_it_describes_in_the_source_image():
    camera = Intrinsics(800.0, 800.0, 320.0, 240.0)
    crop = make_crop(camera, (300.0, 200.0), 120.0, 256)
    assert crop_side(crop) == pytest.approx(120.0, rel=1e-12)
    same = frame_crop(crop, Frame((0.0, 0.0), 1.0), camera)
    np.testing.assert_allclose(same.pixel_matrix, crop.pixel_matrix, atol=1e-9)
    # twice the side, centred where the first crop's point (0.25, 0.5) lies in the source
    wider = frame_crop(crop, Frame((0.25, 0.5), 2.0), camera)
    assert crop_side(wider) == pytest.approx(240.0, rel=1e-9) and wider.size == crop.size
    centre = uncrop_pixels(crop, np.array([1.25, 1.5]) * 128)
    np.testing.assert_allclose(uncrop_pixels(wider, np.array([128.0, 128.0])), centre, atol=1e-6)
