"""Track ids and One Euro smoothing (service.tracking) on made-up people, worked by hand."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from posecontract.geometry import Intrinsics
from posecontract.skeleton import NUM_JOINTS, ROOT
from service.postprocess import PersonPose
from service.results import Box, ModelInfo, PersonResult, PoseResult
from service.tracking import Smoothing, Tracker, VideoCrops, alpha, joint_size

# A person: 17 joints spread over a 100 x 200 pixel box around (cx, cy), camera space at 3 m.
OFFSETS = np.stack([np.linspace(-50, 50, NUM_JOINTS), np.linspace(-100, 100, NUM_JOINTS)], 1)
OFF = Smoothing(enabled=False)


def person(cx: float, cy: float, noise: np.ndarray | None = None) -> PersonResult:
    pixels = np.array([cx, cy]) + OFFSETS + (0 if noise is None else noise)
    camera = np.concatenate([(pixels - [320, 240]) * 3.0, np.full((NUM_JOINTS, 1), 3000.0)], 1)
    pose = PersonPose(pixels=pixels, camera_mm=camera, relative_mm=camera - camera[ROOT],
                      normalised=np.zeros((NUM_JOINTS, 3)),
                      uncertainty_mm=np.full((NUM_JOINTS, 3), 10.0), root_depth_mm=3000.0,
                      root_depth_source="request")
    return PersonResult(box=Box(cx - 50, cy - 100, 100, 200), box_source="detector",
                        crop_centre=(cx, cy), crop_side=300.0, pose=pose, detection_score=0.9)


def frame(*persons: PersonResult) -> PoseResult:
    return PoseResult(model=ModelInfo("m", "1", "local"), width=640, height=480,
                      intrinsics=Intrinsics(500, 500, 320, 240), intrinsics_source="request",
                      persons=list(persons), timings_ms={})


def ids(result: PoseResult) -> list[int | None]:
    return [p.track_id for p in result.persons]


def test_people_keep_their_ids_whatever_their_order():
    tracker = Tracker()
    assert ids(tracker.update(frame(person(100, 200), person(400, 200)), smoothing=OFF)) == [1, 2]
    for step in range(1, 6):
        a, b = person(100 + 5 * step, 200), person(400 - 5 * step, 200)
        # The core answers people best first: the order may change from frame to frame.
        order = (a, b) if step % 2 else (b, a)
        expected = [1, 2] if step % 2 else [2, 1]
        assert ids(tracker.update(frame(*order), smoothing=OFF)) == expected


def test_new_people_get_new_ids_and_ids_are_never_reused():
    tracker = Tracker(max_missed=2)
    assert ids(tracker.update(frame(person(100, 200)), smoothing=OFF)) == [1]
    assert ids(tracker.update(frame(person(100, 200), person(500, 200)), smoothing=OFF)) == [1, 2]
    # Person 2 leaves for two frames (max_missed) and comes back: the same id.
    for _ in range(2):
        assert ids(tracker.update(frame(person(100, 200)), smoothing=OFF)) == [1]
    assert ids(tracker.update(frame(person(100, 200), person(505, 200)), smoothing=OFF)) == [1, 2]
    # Gone for three frames: the track ended; back, a new id.
    for _ in range(3):
        tracker.update(frame(person(100, 200)), smoothing=OFF)
    assert [t.id for t in tracker.tracks] == [1]
    assert ids(tracker.update(frame(person(100, 200), person(505, 200)), smoothing=OFF)) == [1, 3]


def test_a_person_who_jumps_further_than_half_their_size_is_someone_else():
    tracker = Tracker()
    tracker.update(frame(person(100, 200)), smoothing=OFF)
    size = joint_size(person(100, 200).pose.pixels, None)
    assert size == pytest.approx(150)  # (100 + 200) / 2
    near = tracker.update(frame(person(100 + 0.49 * size, 200)), smoothing=OFF)
    far = tracker.update(frame(person(100 + 0.49 * size + 0.51 * size, 200)), smoothing=OFF)
    assert ids(near) == [1] and ids(far) == [2]


def test_alpha_is_the_low_pass_weight():
    # 0.1 Hz at 30 frames/s: tau = 1.59 s, alpha = 1 / (1 + 47.7) (MediaPipe's "~0.02").
    assert alpha(0.1, 1 / 30) == pytest.approx(1 / (1 + 30 / (2 * math.pi * 0.1)))
    assert float(alpha(0.1, 1 / 30)) == pytest.approx(0.0205, abs=1e-4)


def test_one_euro_follows_the_formula_step_by_step():
    s = Smoothing(min_cutoff=1.0, beta=2.0, d_cutoff=1.5)
    tracker = Tracker()
    tracker.update(frame(person(100, 200)), timestamp_s=0.0, smoothing=s)
    moved = tracker.update(frame(person(110, 200)), timestamp_s=0.1, smoothing=s)
    # Each joint moved 10 px in 0.1 s; size 150 px: 0.667 sizes/s, filtered with alpha(1.5).
    speed = float(alpha(1.5, 0.1)) * 10 / 150 / 0.1
    a = float(alpha(1.0 + 2.0 * speed, 0.1))
    got = moved.persons[0].pose
    want_pixels = person(100, 200).pose.pixels + [a * 10, 0]
    np.testing.assert_allclose(got.pixels, want_pixels, rtol=1e-12)
    # The same weight on camera space; relative_mm from the smoothed camera joints.
    want_camera = person(100, 200).pose.camera_mm + [a * 30, 0, 0]
    np.testing.assert_allclose(got.camera_mm, want_camera, rtol=1e-12)
    np.testing.assert_allclose(got.relative_mm, got.camera_mm - got.camera_mm[ROOT])


def test_smoothing_steadies_a_still_person_and_follows_a_moving_one():
    # Noise of 2 px on a 150-px person at 30 frames/s moves joints ~0.5 sizes/s: a beta of 1
    # keeps the cutoff near min_cutoff there, while a walk of 2 sizes/s opens it to ~2.5 Hz.
    s = Smoothing(min_cutoff=0.5, beta=1.0, d_cutoff=1.0)
    rng = np.random.default_rng(0)
    smooth, raw = Tracker(), Tracker()
    still_s, still_r = [], []
    for _ in range(60):
        noise = rng.normal(0, 2.0, (NUM_JOINTS, 2))
        p = person(300, 240, noise)
        still_s.append(smooth.update(frame(p), smoothing=s).persons[0].pose.pixels)
        still_r.append(raw.update(frame(p), smoothing=OFF).persons[0].pose.pixels)
    jitter = lambda xs: np.abs(np.diff(np.array(xs[10:]), 2, axis=0)).mean()  # noqa: E731
    assert jitter(still_s) < 0.2 * jitter(still_r)
    # Then the person walks at 300 px/s (two sizes a second): after a second the smoothed
    # joints trail the true ones by under a fifth of the person's size, and the speed term
    # matters: without it (beta 0) the lag is larger.
    lagging = Tracker()
    lagging.update(frame(person(300, 240)), smoothing=s)
    for i in range(1, 31):
        p = person(300 + 10 * i, 240)
        last = smooth.update(frame(p), smoothing=s).persons[0].pose.pixels
        slow = lagging.update(frame(p), smoothing=Smoothing(min_cutoff=0.5, beta=0.0))
    lag = np.abs(last - p.pose.pixels).max()
    assert lag < 30 and lag < 0.8 * np.abs(slow.persons[0].pose.pixels - p.pose.pixels).max()


def test_bad_smoothing_parameters_are_named():
    with pytest.raises(ValueError, match="min_cutoff"):
        Smoothing(min_cutoff=0).check()
    with pytest.raises(ValueError, match="beta"):
        Smoothing(beta=-1).check()
    with pytest.raises(ValueError, match="d_cutoff"):
        Smoothing(d_cutoff=float("nan")).check()
    with pytest.raises(ValueError, match="max_missed"):
        Tracker(max_missed=-1)


def test_video_crops_detect_every_n_frames_and_after_a_loss():
    tracker, crops = Tracker(), VideoCrops(detect_every=3)
    plan = []
    for i in range(7):
        boxes = crops.boxes(tracker, 640, 480)
        plan.append("detect" if boxes is None else len(boxes))
        people = [person(100 + i, 200), person(400, 200)]
        if i == 4:  # the second person's reused crop shows nobody: fewer than 3 seen joints
            gone = dataclasses.replace(people[1].pose, visibility=np.zeros(NUM_JOINTS))
            people[1] = dataclasses.replace(people[1], pose=gone)
        result = crops.answered(frame(*people), reused=boxes is not None)
        tracker.update(result, smoothing=OFF)
        if i == 4:
            assert len(result.persons) == 1  # dropped from the answer
    # Frames 0 and 3 detect (every 3), 4 reuses and loses someone, so 5 detects again.
    assert plan == ["detect", 2, 2, "detect", 2, "detect", 2]
    # A box the picture does not hold sends the frame to the detector.
    far = Tracker()
    far.update(frame(person(2000, 200)), smoothing=OFF)
    c = VideoCrops(detect_every=5)
    c.answered(frame(), reused=False)
    assert c.boxes(far, 640, 480) is None
    with pytest.raises(ValueError, match="detect_every"):
        VideoCrops(detect_every=0)
