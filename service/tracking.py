"""Following people across the frames of a stream: track ids and One Euro smoothing.

A `Tracker` lives as long as one StreamPredict call and sees its answers in order. Each frame's
people are matched to the tracks of the frames before by their joints: the cost of a pair is
the mean distance between the person's 2D joints and the track's last ones, in units of the
track's size (the mean of its joint box's width and height); pairs cheaper than `MATCH_MAX`
are taken cheapest first, each track and person at most once. A person left over starts a new
track (ids count up from 1 and are never reused in a stream); a track unmatched for more than
`max_missed` frames in a row ends. A frame that failed is no observation: tracks wait for it.

Smoothing is the One Euro filter (Casiez, Roussel and Vogel, CHI 2012): an exponential moving
average whose cutoff frequency grows with the joint's speed, so that a still joint is held
steady and a moving one follows with little lag:

    alpha(f, dt) = 1 / (1 + 1 / (2 pi f dt))
    speed  <- alpha(d_cutoff, dt) |x - x_prev| / (size dt) + (1 - alpha(d_cutoff, dt)) speed
    x_hat  <- alpha(min_cutoff + beta speed, dt) x + (1 - alpha(...)) x_hat_prev

Speeds are in track sizes per second (so one set of parameters serves near and far people), as
MediaPipe's landmark smoothing scales them by the object's size. One cutoff per joint, from its
image speed, smooths both its pixel (u, v) and its camera-space (X, Y, Z) position, so the two
stay one joint; `relative_mm` is recomputed from the smoothed camera-space joints. Visibility,
uncertainty and heatmaps are the frame's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from posecontract.skeleton import ROOT
from service.postprocess import SEEN, seen_joints
from service.results import PersonResult, PoseResult

MATCH_MAX = 0.5  # largest matching cost: mean joint distance of half a person's size
DEFAULT_MAX_MISSED = 10  # frames a track survives unmatched (a third of a second at 30 fps)
DEFAULT_FRAME_S = 1 / 30  # frame interval assumed when frames carry no timestamp
# StreamPredict smooths only when asked (Tracking.smooth): a stream's answers were each frame's
# own before tracking existed, and stay so for the clients written then; smoothing also needs
# the frames' times, which only the client knows. `margipose video` asks for it (and sends the
# video's times).
SMOOTH_BY_DEFAULT = False


@dataclass(frozen=True)
class Smoothing:
    """One Euro parameters (MediaPipe's pose landmark defaults: 0.1 Hz, 40, 1 Hz)."""

    enabled: bool = True
    min_cutoff: float = 0.1  # Hz: the cutoff of a still joint (lower: steadier, more lag)
    beta: float = 40.0       # cutoff added per track size per second of speed
    d_cutoff: float = 1.0    # Hz: the cutoff of the speed estimate

    def check(self) -> None:
        """ValueError naming the parameter out of range."""
        for name in ("min_cutoff", "d_cutoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive frequency in Hz, got {value}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """The EMA weight of a new sample for a first-order low-pass at `cutoff` Hz, step `dt` s."""
    return 1.0 / (1.0 + 1.0 / (2 * np.pi * np.asarray(cutoff, dtype=np.float64) * dt))


def joint_size(pixels: np.ndarray, visibility: np.ndarray | None) -> float:
    """A person's size in pixels: the mean of its (seen) joint box's width and height."""
    pixels = seen_joints(pixels, visibility)
    extent = pixels.max(axis=0) - pixels.min(axis=0)
    return max(float(extent.mean()), 1.0)


@dataclass
class Track:
    id: int
    t: float
    pixels: np.ndarray                 # (17, 2) the last (smoothed) joints
    camera_mm: np.ndarray              # (17, 3)
    size: float
    speed: np.ndarray = field(default_factory=lambda: np.zeros(17))  # sizes per second
    missed: int = 0
    visibility: np.ndarray | None = None  # (17,) the last frame's, when the model says


class Tracker:
    """Track ids and smoothing for one stream's frames, given in order."""

    def __init__(self, max_missed: int = DEFAULT_MAX_MISSED):
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.next_id = 1
        self.t: float | None = None

    def update(self, result: PoseResult, timestamp_s: float | None = None,
               smoothing: Smoothing = Smoothing()) -> PoseResult:
        """`result` with each person's `track_id` set and, if `smoothing.enabled`, their joints
        smoothed. `timestamp_s` is the frame's time (None: DEFAULT_FRAME_S after the last)."""
        t = timestamp_s if timestamp_s is not None else \
            (0.0 if self.t is None else self.t + DEFAULT_FRAME_S)
        dt = DEFAULT_FRAME_S if self.t is None or t <= self.t else t - self.t
        self.t = t
        persons = result.persons
        pairs = self._match(persons)
        out: list[PersonResult] = []
        matched: set[int] = set()
        for i, person in enumerate(persons):
            pose = person.pose
            size = joint_size(pose.pixels, pose.visibility)
            track = pairs.get(i)
            if track is None:
                track = Track(self.next_id, t, pose.pixels.astype(np.float64),
                              pose.camera_mm.astype(np.float64), size)
                self.next_id += 1
                self.tracks.append(track)
                smoothed = person
            else:
                # The track's own interval: it may have missed frames.
                since = t - track.t if t > track.t else dt
                smoothed = self._smooth(track, person, since, size, smoothing) \
                    if smoothing.enabled else person
                track.pixels = smoothed.pose.pixels.astype(np.float64)
                track.camera_mm = smoothed.pose.camera_mm.astype(np.float64)
                track.size, track.t, track.missed = size, t, 0
            track.visibility = pose.visibility
            matched.add(track.id)
            out.append(replace(smoothed, track_id=track.id))
        for track in self.tracks:
            if track.id not in matched:
                track.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        return replace(result, persons=out)

    def _match(self, persons: list[PersonResult]) -> dict[int, Track]:
        """person index -> its track, cheapest pairs first."""
        costs = []
        for i, person in enumerate(persons):
            for track in self.tracks:
                d = np.linalg.norm(person.pose.pixels - track.pixels, axis=1).mean() / track.size
                if d < MATCH_MAX:
                    costs.append((float(d), i, track.id))
        by_id = {tr.id: tr for tr in self.tracks}
        pairs: dict[int, Track] = {}
        used: set[int] = set()
        for _, i, track_id in sorted(costs):
            if i in pairs or track_id in used:
                continue
            pairs[i] = by_id[track_id]
            used.add(track_id)
        return pairs

    @staticmethod
    def _smooth(track: Track, person: PersonResult, dt: float, size: float,
                s: Smoothing) -> PersonResult:
        pose = person.pose
        raw_speed = np.linalg.norm(pose.pixels - track.pixels, axis=1) / (size * dt)
        a_d = alpha(s.d_cutoff, dt)
        track.speed = a_d * raw_speed + (1 - a_d) * track.speed
        a = alpha(s.min_cutoff + s.beta * track.speed, dt)[:, None]
        pixels = a * pose.pixels + (1 - a) * track.pixels
        camera = a * pose.camera_mm + (1 - a) * track.camera_mm
        relative = camera - camera[ROOT]
        return replace(person, pose=replace(pose, pixels=pixels, camera_mm=camera,
                                            relative_mm=relative))


def seen_box(pixels: np.ndarray, visibility: np.ndarray | None) -> tuple[float, float, float,
                                                                         float]:
    """The box (x, y, w, h) around a pose's seen joints (`seen_joints`, as the auto-crop)."""
    pixels = seen_joints(pixels, visibility)
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


class VideoCrops:
    """Video mode: where a stream's next frame finds its people (like MediaPipe's tracking of
    the pose landmarks' region between detections).

    The detector runs on the first frame, then every `detect_every` frames, and whenever a
    person was lost; in between, each person's crop is placed around the joints their track
    saw in the frame before (`seen_box`, cropped as a box of the request), which costs one pose
    pass per person and no detection. A person whose reused crop shows fewer than three seen
    joints has left it: they are dropped from that frame's answer and the next frame detects.
    `detect_every` 1 is the detector on every frame.
    """

    def __init__(self, detect_every: int = 1):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = detect_every
        self.since_detection: int | None = None  # frames since the detector last ran
        self.detect_next = True

    def boxes(self, tracker: Tracker, width: int, height: int
              ) -> list[tuple[float, float, float, float]] | None:
        """The boxes for the next frame (of the previous frame's `width` x `height`), or None
        when it runs the detector."""
        live = [t for t in tracker.tracks if t.missed == 0]
        if (self.detect_next or not live or self.since_detection is None
                or self.since_detection + 1 >= self.detect_every):
            return None
        boxes = [seen_box(t.pixels, t.visibility) for t in live]
        # A box must be a box, and touch the picture (the core refuses others): else detect.
        if any(w < 2 or h < 2 or x >= width or y >= height or x + w <= 0 or y + h <= 0
               for x, y, w, h in boxes):
            return None
        return boxes

    def answered(self, result: PoseResult, reused: bool) -> PoseResult:
        """Record how the frame went; drop the people a reused crop lost."""
        if not reused:
            self.since_detection, self.detect_next = 0, False
            return result
        self.since_detection = (self.since_detection or 0) + 1
        kept = [p for p in result.persons if p.pose.visibility is None
                or int((np.asarray(p.pose.visibility) >= SEEN).sum()) >= 3]
        if len(kept) < len(result.persons):
            self.detect_next = True
        return replace(result, persons=kept)
