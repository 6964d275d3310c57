import dataclasses

import numpy as np
import pytest

from training.camera import CropParams, crop_example
from training.data.sample import Sample, SampleSource
from training.skeleton import JOINT_NAMES
from training.synthetic.body import default_bodies
from training.synthetic.motions import default_motions
from training.synthetic.source import SyntheticHumans, render_sample


@pytest.fixture(scope="module")
def rendered():
    """A few rendered train and test samples with their scenes."""
    asset, lib = default_bodies(), default_motions()
    return {split: [render_sample(asset, lib, split, 0, i) for i in range(4)]
            for split in ("train", "test")}


def test_samples_satisfy_the_contract(rendered):
    source = SyntheticHumans("train", size=10, seed=0)
    assert isinstance(source, SampleSource) and len(source) == 10 and source.has_depth
    for sample, _ in rendered["train"] + rendered["test"]:
        assert isinstance(sample, Sample) and sample.image.mode == "RGB"
        assert sample.mask.all() and sample.has_depth
        assert np.all(sample.joints[:, 2] > 0) and np.isfinite(sample.joints).all()
        assert sample.meta["dataset"].startswith("synthetic-")
        example = crop_example(sample.image, sample.camera, sample.joints,
                               CropParams(rotation=0.2, flip=True), box=sample.box)
        assert example.image.shape == (256, 256, 3) and np.isfinite(example.target).all()


def test_projected_joints_land_on_the_body(rendered):
    for sample, scene in rendered["train"] + rendered["test"]:
        mask = scene.body_mask
        h, w = mask.shape
        uv = sample.camera.project(sample.joints)
        checked = 0
        for name, (u, v) in zip(JOINT_NAMES, uv, strict=True):
            i, j = int(np.floor(u)), int(np.floor(v))
            if 2 <= i < w - 2 and 2 <= j < h - 2:
                # Inner joints project inside the silhouette; the head top (a surface vertex)
                # may sit on its edge.
                assert mask[j - 2:j + 3, i - 2:i + 3].any(), name
                if name in ("pelvis", "neck", "spine"):
                    assert mask[j, i], name
                checked += 1
        assert checked >= 8


def test_same_seed_same_sample_and_seeds_differ():
    a = SyntheticHumans("train", size=5, seed=11)[3]
    b = SyntheticHumans("train", size=5, seed=11)[3]
    c = SyntheticHumans("train", size=5, seed=12)[3]
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    np.testing.assert_array_equal(a.joints, b.joints)
    assert a.meta == b.meta
    assert not np.array_equal(a.joints, c.joints)
    assert a.image.size != c.image.size or not np.array_equal(np.asarray(a.image),
                                                              np.asarray(c.image))


def test_splits_share_no_bodies(rendered):
    asset = default_bodies()
    for split, items in rendered.items():
        for sample, _ in items:
            assert sample.meta["body"] in asset.bodies(split)
    assert not set(asset.bodies("train")) & set(asset.bodies("test"))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Unknown split"):
        SyntheticHumans("val")
    with pytest.raises(IndexError):
        SyntheticHumans("train", size=2)[2]


def test_joints_under_a_scene_occluder_are_marked_and_leave_the_view() -> None:
    from posecontract.geometry import Intrinsics
    from training.data.transforms import crop_geometry
    from training.synthetic.scene import joints_covered

    cam = Intrinsics(100.0, 100.0, 20.0, 20.0)
    joints = np.array([[0.0, 0.0, 1000.0], [100.0, 0.0, 1000.0], [0.0, 0.0, -50.0],
                       [1000.0, 0.0, 1000.0]])  # centre, 10 px right, behind, off the image
    covered = np.zeros((40, 40), dtype=bool)
    covered[18:23, 18:23] = True  # over the centre pixel (20, 20)
    covered[:, 39] = True
    assert joints_covered(covered, cam, joints).tolist() == [True, False, False, False]
    # A sample's occluded joints are out of view and out of the position loss.
    sample = SyntheticHumans("test", size=4, seed=3)[0]
    hidden = np.zeros(17, dtype=bool)
    hidden[[3, 4]] = True
    plain = crop_geometry(sample, CropParams())
    marked = crop_geometry(dataclasses.replace(sample, occluded=hidden), CropParams())
    assert np.array_equal(marked.visible, plain.visible & ~hidden)
    assert np.array_equal(marked.mask, plain.mask & ~hidden)
    assert marked.labelled[[3, 4]].all()  # still labelled: their in-view answer is "no"


def test_rendered_occluder_labels_match_the_pixels() -> None:
    # Among a few renders some have occluders; every joint marked occluded projects inside the
    # image, and a render without occluders marks none.
    source = SyntheticHumans("test", size=12, seed=11)
    marked = 0
    for i in range(len(source)):
        s = source[i]
        assert s.occluded is not None and s.occluded.shape == (17,)
        if s.meta["occlusion"] == 0.0:
            assert not s.occluded.any()
        marked += int(s.occluded.sum())
    assert marked > 0


def test_joints_behind_the_body_are_marked_out_of_view_but_keep_their_targets() -> None:
    from posecontract.geometry import Intrinsics
    from training.data.transforms import crop_geometry
    from training.synthetic.scene import SELF_OCCLUSION_DEPTH_MM, joints_behind_surface

    cam = Intrinsics(100.0, 100.0, 20.0, 20.0)
    joints = np.zeros((17, 3))
    joints[:, 2] = 2000.0  # every joint on the optical axis, pixel (20, 20), 2 m away
    depth = np.full((40, 40), np.inf, dtype=np.float32)
    depth[20, 20] = 2000.0 - 130.0  # a surface 130 mm in front of the joints' pixel
    behind = joints_behind_surface(depth, cam, joints)
    # limits of 120 mm (elbows, wrists, knees, ankles, head top) are exceeded; 150 / 200 mm
    # (shoulders, hips) and the trunk's centre line (no limit) are not
    expected = [lim is not None and lim < 130.0 for lim in SELF_OCCLUSION_DEPTH_MM]
    assert behind.tolist() == expected and any(expected) and not all(expected)
    off = joints.copy()
    off[:, 0] = 1000.0  # projected off the image: never marked
    assert not joints_behind_surface(depth, cam, off).any()
    # A sample's self-occluded joints leave the view, not the position loss.
    sample = SyntheticHumans("test", size=4, seed=3)[0]
    hidden = np.zeros(17, dtype=bool)
    hidden[[5, 6]] = True
    plain = crop_geometry(dataclasses.replace(sample, self_occluded=None), CropParams())
    marked = crop_geometry(dataclasses.replace(sample, self_occluded=hidden), CropParams())
    assert np.array_equal(marked.visible, plain.visible & ~hidden)
    assert np.array_equal(marked.mask, plain.mask)
    # mirrored crops swap left and right: the flag follows its joint
    flipped = crop_geometry(dataclasses.replace(sample, self_occluded=hidden),
                            CropParams(flip=True))
    assert not flipped.visible[[2, 3]].any()


def test_renders_mark_far_limbs_behind_the_body() -> None:
    # Side views hide the far arm or leg behind the body: some renders of a few mark joints,
    # and the trunk's centre line is never marked.
    source = SyntheticHumans("test", size=12, seed=11)
    flags = np.stack([source[i].self_occluded for i in range(len(source))])
    assert flags.shape == (12, 17) and flags.any()
    assert not flags[:, [1, 14, 15, 16]].any()
