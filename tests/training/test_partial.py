"""Partial views: border cuts and occluders, the in-view labels and the masks they leave."""

import dataclasses

import numpy as np
import pytest
import torch

from tests.training.stick_figures import CAMERA, sample_2d, sample_3d
from training.camera import CropParams
from training.data.mixed import MixedDataset, collate
from training.data.partial import (
    MIN_VISIBLE,
    Cut,
    Occluder,
    PartialView,
    cut_box,
    draw_cut,
    draw_occluder,
)
from training.data.transforms import (
    crop_geometry,
    crop_pixels,
    example_rng,
    make_example,
    partial_example,
    random_example,
)
from training.skeleton import flip_joint_order, joint_index


def _waist_cut(sample) -> Cut:
    """A horizontal border a little below the pelvis: legs gone, trunk and arms kept."""
    uv = CAMERA.project(sample.joints)
    pelvis_v = uv[joint_index("pelvis"), 1]
    knee_v = uv[[joint_index("left_knee"), joint_index("right_knee")], 1].min()
    return Cut((0.0, 1.0), float(pelvis_v + 0.4 * (knee_v - pelvis_v)))


def test_cut_geometry() -> None:
    cut = Cut((0.0, 1.0), 100.0)
    points = np.array([[5.0, 50.0], [7.0, 150.0]])
    assert cut.beyond(points).tolist() == [False, True]
    assert np.allclose(cut.clamp(points), [[5.0, 50.0], [7.0, 100.0]])


def test_partial_view_rejects_bad_probabilities() -> None:
    with pytest.raises(ValueError, match="cut_prob"):
        PartialView(cut_prob=1.5)
    assert not PartialView().active and PartialView(occluder_prob=0.1).active


def test_waist_cut_hides_the_legs_and_reframes_the_box() -> None:
    sample = sample_3d(3)
    cut = _waist_cut(sample)
    geometry = crop_geometry(sample, CropParams(), cut=cut)
    legs = [joint_index(n) for n in ("left_knee", "right_knee", "left_ankle", "right_ankle")]
    upper = [joint_index(n) for n in ("head_top", "neck", "left_shoulder", "right_elbow")]
    assert not geometry.visible[legs].any() and not geometry.mask[legs].any()
    assert geometry.visible[upper].all() and geometry.mask[upper].all()
    assert geometry.labelled.all()  # the legs stay labelled: their in-view label is "no"
    # The box frames what is left: the crop is smaller than the full body's.
    full = crop_geometry(sample, CropParams())
    assert cut_box(cut, CAMERA.project(sample.joints), sample.mask).side < sample.box.side
    assert abs(np.linalg.det(geometry.crop.pixel_matrix[:2, :2])) > abs(
        np.linalg.det(full.crop.pixel_matrix[:2, :2]))


def test_cut_blacks_out_what_lies_beyond() -> None:
    sample = sample_3d(3)
    cut = _waist_cut(sample)
    plain = make_example(sample, CropParams(), cut=None)
    cropped = make_example(sample, CropParams(), cut=cut)
    image = cropped.image.permute(1, 2, 0).numpy()
    # Crop pixels whose source point lies beyond the border are black, the others untouched.
    inverse = np.linalg.inv(cropped.crop.pixel_matrix)
    centres = np.arange(256) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    src = np.stack([inverse[0, 0] * gx + inverse[0, 1] * gy + inverse[0, 2],
                    inverse[1, 0] * gx + inverse[1, 1] * gy + inverse[1, 2]], axis=-1)
    gone = cut.beyond(src)
    assert gone.any() and (~gone).any()
    assert (image[gone] == 0).all()
    same_crop = make_example(dataclasses.replace(sample), CropParams(), cut=cut)
    assert torch.equal(same_crop.image, cropped.image)  # deterministic
    assert not torch.equal(plain.image, cropped.image)


def test_flip_swaps_the_in_view_labels() -> None:
    sample = sample_3d(5)
    cut = Cut((1.0, 0.0), float(CAMERA.project(sample.joints)[:, 0].mean()))  # right side gone
    plain = crop_geometry(sample, CropParams(), cut=cut)
    flipped = crop_geometry(sample, CropParams(flip=True), cut=cut)
    assert plain.visible.any() and not plain.visible.all()
    assert np.array_equal(flipped.visible, flip_joint_order(plain.visible, axis=-1))
    assert np.array_equal(flipped.mask, flip_joint_order(plain.mask, axis=-1))


def test_joints_outside_the_source_image_are_not_in_view() -> None:
    sample = sample_3d(2)
    # Zoom out and shift so that the crop reaches past the image's left edge: the crop shows
    # black there, and a joint moved beyond the edge is not in view although inside the crop.
    joints = sample.joints.copy()
    wrist = joint_index("left_wrist")
    joints[wrist, 0] = (-5.0 - CAMERA.cx) * joints[wrist, 2] / CAMERA.fx  # u = -5
    moved = dataclasses.replace(sample, joints=joints)
    geometry = crop_geometry(moved, CropParams(scale=3.0))
    assert abs(geometry.target[wrist, 0]) < 1  # inside the crop
    assert not geometry.visible[wrist]
    assert geometry.mask[wrist]  # a 3D joint outside the image keeps its position loss
    others = np.arange(17) != wrist
    assert geometry.visible[others].all()


def test_occluder_hides_the_joints_it_covers() -> None:
    sample = sample_3d(4)
    geometry = crop_geometry(sample, CropParams())
    xy = crop_pixels(geometry.target)
    head = joint_index("head")
    x, y = xy[head]
    occ = Occluder(x - 20, y - 20, x + 20, y + 20, (10, 200, 30))
    example = make_example(sample, CropParams(), occluder=occ,
                           occluder_rng=np.random.default_rng(0))
    covered = occ.covers(xy)
    assert covered[head]
    assert not example.visible[covered].any() and not example.mask[covered].any()
    assert example.visible[~covered].all()
    patch = example.image.permute(1, 2, 0).numpy()[int(y) - 15:int(y) + 15,
                                                  int(x) - 15:int(x) + 15].astype(float)
    assert np.abs(patch.mean(axis=(0, 1)) - [10, 200, 30]).max() < 10  # the flat colour


def test_drawn_cuts_and_occluders_leave_enough_joints() -> None:
    partial = PartialView(cut_prob=1.0, occluder_prob=1.0)
    counts, cut_any = [], 0
    for seed in range(40):
        sample = sample_3d(seed % 7) if seed % 2 else sample_2d(seed % 7)
        example = random_example(sample, example_rng(3, seed), partial=partial)
        visible = example.visible.numpy()
        counts.append(int(visible.sum()))
        cut_any += int((~visible & example.labelled.numpy()).any())
        assert not (visible & ~example.labelled.numpy()).any()
        # the position loss never sees a joint out of view that the sample did not have before
        assert not (example.mask.numpy() & ~visible & ~example.labelled.numpy()).any()
    assert min(counts) >= MIN_VISIBLE
    assert cut_any >= 30  # nearly every example lost some joints


def test_draw_cut_refuses_a_person_with_too_few_joints() -> None:
    labelled = np.zeros(17, dtype=bool)
    labelled[:2] = True
    rng = np.random.default_rng(0)
    assert draw_cut(rng, np.zeros((17, 2)), labelled) is None
    assert draw_occluder(rng, np.zeros((17, 2)), np.zeros(17, dtype=bool), 256) is None


def test_no_partial_view_leaves_examples_unchanged() -> None:
    sample = sample_3d(1)
    a = random_example(sample, example_rng(0, 9))
    b = random_example(sample, example_rng(0, 9), partial=PartialView())
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    c = random_example(sample, example_rng(0, 9), partial=PartialView(0.5, 0.5))
    d = random_example(sample, example_rng(0, 9), partial=PartialView(0.5, 0.5))
    assert torch.equal(c.image, d.image) and torch.equal(c.visible, d.visible)


def test_partial_example_without_draws_is_the_plain_example() -> None:
    sample = sample_3d(6)
    e = partial_example(sample, None, None, PartialView(0.0, 0.0), np.random.default_rng(1))
    assert torch.equal(e.image, make_example(sample).image)


def test_collate_carries_the_in_view_labels() -> None:
    data = MixedDataset([_source()], seed=0, partial=PartialView(1.0, 0.0))
    batch = collate([data[(0, i, i)] for i in range(3)])
    assert batch["visible"].shape == (3, 17) and batch["visible"].dtype == torch.bool
    assert batch["labelled"].shape == (3, 17)
    assert not bool(batch["visible"].all())


def _source():
    from training.data.sample import ListSource

    return ListSource("stick-3d", [sample_3d(i) for i in range(3)])


def test_tight_box_keeps_the_picture_and_hides_what_it_leaves_out() -> None:
    sample = sample_3d(3)
    border = _waist_cut(sample)
    tight = dataclasses.replace(border, tight=True)
    cut_geom = crop_geometry(sample, CropParams(), cut=border)
    tight_geom = crop_geometry(sample, CropParams(), cut=tight)
    # The same re-framed box ...
    assert np.allclose(tight_geom.crop.pixel_matrix, cut_geom.crop.pixel_matrix)
    # ... but nothing is blacked out: the pixels are the plain crop of that box.
    shown = make_example(sample, CropParams(), cut=tight)
    framed = make_example(sample, CropParams(), cut=border)
    assert not torch.equal(shown.image, framed.image)
    image = shown.image.permute(1, 2, 0).numpy()
    assert (image.reshape(-1, 3) != 0).any(axis=1).mean() > (
        framed.image.permute(1, 2, 0).numpy().reshape(-1, 3) != 0).any(axis=1).mean()
    # In view exactly while inside the crop; the rest leaves the position loss too.
    inside = (np.abs(tight_geom.target[:, :2]) <= 1).all(axis=1)
    assert np.array_equal(tight_geom.visible, inside & sample.mask)
    assert not (tight_geom.mask & ~inside).any()
    legs = [joint_index(n) for n in ("left_ankle", "right_ankle")]
    assert not tight_geom.visible[legs].any()


def test_tight_prob_turns_cuts_into_tight_boxes_without_moving_other_draws() -> None:
    sample = sample_3d(4)
    for seed in range(8):
        a = partial_example(sample, None, None, PartialView(1.0, 0.3),
                            np.random.default_rng(seed))
        b = partial_example(sample, None, None, PartialView(1.0, 0.3, tight_prob=1.0),
                            np.random.default_rng(seed))
        # the same cut line, hence the same box; only the blacking-out differs
        assert torch.allclose(a.target, b.target)
        assert not (b.visible.numpy() & ~b.labelled.numpy()).any()
    with pytest.raises(ValueError, match="tight_prob"):
        PartialView(tight_prob=-0.1)
