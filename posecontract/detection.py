"""The person detector's contract and its post-processing: anchors, decoding, NMS, crops.

The detector is MediaPipe's BlazePose person detector
(`blazepose_detector_eff_retina_4kp_sparse_2021_10_18`), converted op by op (`training.tflite`)
and exported with its box decoding in the graph (`training.export_detector`). Its input is the
whole image letterboxed into a 224 x 224 square (`letterbox`); per anchor it answers a face box
and four keypoints, and a score:

    keypoint 0  mid-hip centre          keypoint 2  mid-shoulder centre
    keypoint 1  with keypoint 0, the full-body circle (centre 0, radius |1 - 0|)
    keypoint 3  with keypoint 2, the upper-body circle

This module turns the exported model's outputs into people: score threshold, weighted
non-maximum suppression, letterbox removal, and the pose model's crop for each detection
(`detection_crop`: centre and side fitted to the crops MargiPose was trained on; see
`CROP_FROM_CIRCLE`). Numpy only: the gateway runs it whatever the backend.

Anchor layout and decoding follow the options of MediaPipe's pose detection graph (SSD anchors:
5 layers, strides 8, 16, 32, 32, 32, two anchors per cell per layer, fixed unit size, centred in
their cell; coordinates are offsets in input pixels, 224 per unit; sigmoid scores with logits
clipped to +-100; weighted NMS at IoU 0.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from posecontract.layout import ModelContract, TensorSpec
from posecontract.triton import ServingOptions, write_cpu_twin

DETECTOR_NAME = "person-detector"  # its folder in the model repository, and its Triton name
DETECTOR_INPUT_SIZE = 224
NUM_ANCHORS = 2254
NUM_KEYPOINTS = 4
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS  # box (x centre, y centre, w, h), then (x, y) per keypoint

# Exported model contract (Triton's positional names, like the pose model's).
DETECTOR_INPUT = TensorSpec(
    "INPUT__0", "image", "TYPE_UINT8", (3, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE),
    "The whole image letterboxed into a 224 x 224 RGB square (uint8, NCHW, black borders); "
    "the model owns normalisation.")
DETECTOR_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("OUTPUT__0", "boxes", "TYPE_FP32", (NUM_ANCHORS, NUM_COORDS),
               "Per anchor, decoded and in units of the 224 input (0..1): box x centre, "
               "y centre, width, height, then x, y of keypoints 0..3."),
    TensorSpec("OUTPUT__1", "scores", "TYPE_FP32", (NUM_ANCHORS,),
               "Per anchor, the probability that it holds a person (sigmoid of the logit)."),
)

DETECTOR_CONTRACT = ModelContract("person detector", DETECTOR_INPUT, DETECTOR_OUTPUTS)

# Its Triton serving options: a call is one image's windows (1 to 4), so small batches.
DETECTOR_SERVING = ServingOptions(max_batch_size=8, preferred_batch_sizes=(4, 8),
                                  warmup_batch_sizes=(1, 4))

# SSD anchor options of the pose detector.
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated scale, both of fixed unit size

# Detections below this score are dropped. MediaPipe's pose solutions default to 0.5; 0.6 keeps
# the recall of 0.5 on the real2d train split (0.969) with fewer unmatched detections (35 vs 40)
# and finds someone in 1 of 203 pictures of nobody instead of 4 (bench/results/detector/).
DEFAULT_MIN_SCORE = 0.6
NMS_IOU = 0.3                 # MediaPipe's min_suppression_threshold (IoU, weighted)
TILE_MIN_ASPECT = 1.2         # images at least this elongated are also seen in square tiles
# Across windows: the same person when the mid-hips are closer than this x the larger full-body
# radius (chosen on the real2d train split: 0.75 leaves no two people with overlapping crops
# there, at the same recall as 0.5; `training.detector`).
MERGE_DISTANCE = 0.75

# The pose model's crop from the full-body circle (centre c = keypoint 0, radius vector
# v = keypoint 1 - keypoint 0, r = |v|): crop centre c + CENTRE_ALONG * v, crop side
# SIDE_PER_RADIUS * r. Fitted by `training.detector fit-crop` on the real2d train split as
# the medians over matched people of where the training crop (centre of the teacher joints'
# box, side 1.5 x its longer side) lies: 406 people, along 0.073, across -0.001 (none: not
# used), side 2.38 (quartiles 2.17, 2.57); bench/results/detector/fit_crop_train.json.
CROP_FROM_CIRCLE = {"centre_along": 0.07, "side_per_radius": 2.4}


def anchor_centres(input_size: int = DETECTOR_INPUT_SIZE,
                   strides: tuple[int, ...] = ANCHOR_STRIDES,
                   per_layer: int = ANCHORS_PER_LAYER) -> np.ndarray:
    """(NUM_ANCHORS, 2) anchor centres (x, y) in units of the input, in the model's order.

    Consecutive layers of one stride share a feature map; each map is walked row by row, cell by
    cell, with `per_layer` anchors per cell for every layer of the stride.
    """
    out = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        layers = 0
        while i < len(strides) and strides[i] == stride:
            layers += 1
            i += 1
        cells = -(-input_size // stride)
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells,
                           indexing="ij")
        centres = np.stack([x.ravel(), y.ravel()], axis=1)
        out.append(np.repeat(centres, layers * per_layer, axis=0))
    return np.concatenate(out).astype(np.float32)


def decode_raw(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
               input_size: int = DETECTOR_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The network's raw outputs ((..., N, 12) offsets in input pixels, (..., N[, 1]) logits)
    -> decoded (..., N, 12) in input units and (..., N) scores. The exported model does this in
    its graph; this is the reference the export is tested against."""
    raw = np.asarray(raw_boxes, dtype=np.float64) / input_size
    out = raw.copy()
    xy = np.tile(anchors.astype(np.float64), NUM_COORDS // 2)  # (N, 12): anchor x, y repeated
    mask = np.ones(NUM_COORDS, dtype=bool)
    mask[2:4] = False   # width and height are sizes, not positions
    out[..., mask] = raw[..., mask] + xy[..., mask]
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(raw.shape[:-1]), -100, 100)
    return out, 1 / (1 + np.exp(-logits))


@dataclass(frozen=True)
class Detection:
    """One person found, in image pixels."""

    score: float
    box: tuple[float, float, float, float]  # the detector's box (its face box): x, y, w, h
    keypoints: np.ndarray                   # (4, 2) x, y

    @property
    def body_centre(self) -> np.ndarray:
        return self.keypoints[0]

    @property
    def body_radius(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    def body_box(self) -> tuple[float, float, float, float]:
        """The square around the full-body circle: x, y, w, h."""
        (cx, cy), r = self.keypoints[0], self.body_radius
        return (float(cx - r), float(cy - r), 2 * r, 2 * r)


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(N, >=4) centre-size boxes -> (N, 4) x0, y0, x1, y1."""
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one (4,) corner box against (N, 4) corner boxes."""
    lo = np.maximum(a[:2], b[:, :2])
    hi = np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda c: np.prod(np.clip(c[..., 2:] - c[..., :2], 0, None), axis=-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, min_score: float,
                 iou_threshold: float = NMS_IOU, max_detections: int | None = None
                 ) -> list[tuple[float, np.ndarray]]:
    """Weighted non-maximum suppression over decoded (N, 12) rows and (N,) scores.

    Candidates at or above `min_score`, best first: each takes every remaining candidate whose
    box overlaps it by more than `iou_threshold` IoU, and becomes their score-weighted mean
    (box and keypoints; the score stays the best one's). Answers (score, row) pairs, best first.
    """
    keep = np.flatnonzero(scores >= min_score)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    rows = boxes[order].astype(np.float64)
    s = scores[order].astype(np.float64)
    corners = _corners(rows)
    alive = np.ones(len(order), dtype=bool)
    out: list[tuple[float, np.ndarray]] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        rest = np.flatnonzero(alive)
        group = rest[iou(corners[i], corners[rest]) > iou_threshold]
        group = np.union1d(group, [i])
        alive[group] = False
        weights = s[group] / s[group].sum()
        out.append((float(s[i]), (weights[:, None] * rows[group]).sum(axis=0)))
        if max_detections is not None and len(out) >= max_detections:
            break
    return out


@dataclass(frozen=True)
class Letterbox:
    """Where a window of the image (`left`, `top`, `width` x `height` image pixels) lies in the
    detector's square input: scaled to fit, centred, black around it."""

    width: float
    height: float
    left: float = 0.0
    top: float = 0.0
    size: int = DETECTOR_INPUT_SIZE

    def resized(self) -> tuple[int, int]:
        """The window's size inside the square, in whole input pixels."""
        scale = self.size / max(self.width, self.height)
        return (min(self.size, max(1, round(self.width * scale))),
                min(self.size, max(1, round(self.height * scale))))

    def paste_at(self) -> tuple[int, int]:
        """Input pixels of black left and above the window."""
        w, h = self.resized()
        return ((self.size - w) // 2, (self.size - h) // 2)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) points in input units (0..1 across the square) -> image pixels."""
        (w, h), (x0, y0) = self.resized(), self.paste_at()
        p = np.asarray(points, dtype=np.float64) * self.size
        return np.stack([(p[..., 0] - x0) * self.width / w + self.left,
                         (p[..., 1] - y0) * self.height / h + self.top], axis=-1)

    def render(self, image: Image.Image, source_scale: float = 1.0) -> np.ndarray:
        """The detector's input for this window of `image`: (3, size, size) uint8.

        `source_scale` is decoded pixels per image pixel (JPEG draft decoding, as in
        `posecontract.crop_image`). Resampled with Pillow's antialiased bilinear filter."""
        s = source_scale
        box = (self.left * s, self.top * s, (self.left + self.width) * s,
               (self.top + self.height) * s)
        square = Image.new("RGB", (self.size, self.size))
        square.paste(image.resize(self.resized(), Image.Resampling.BILINEAR, box=box),
                     self.paste_at())
        return np.asarray(square).transpose(2, 0, 1)


def windows(width: int, height: int, tiles: bool = True) -> list[Letterbox]:
    """The windows the detector looks at: the whole image, and for an image longer than
    `TILE_MIN_ASPECT` x its width (or height), squares of its shorter side along the longer one
    overlapping by at least half, so that people of a wide frame are seen at up to twice the
    resolution (a 16:9 frame: the whole and three squares)."""
    out = [Letterbox(width, height)]
    long, short = max(width, height), min(width, height)
    if tiles and long >= TILE_MIN_ASPECT * short:
        count = math.ceil(2 * long / short - 1)
        for start in np.linspace(0, long - short, count):
            left, top = (float(start), 0.0) if width >= height else (0.0, float(start))
            out.append(Letterbox(short, short, left, top))
    return out


def detections(boxes: np.ndarray, scores: np.ndarray, letterbox: Letterbox,
               min_score: float = DEFAULT_MIN_SCORE, max_detections: int | None = None,
               iou_threshold: float = NMS_IOU) -> list[Detection]:
    """The exported detector's outputs for one image -> people in image pixels, best first."""
    out = []
    for score, row in weighted_nms(np.asarray(boxes), np.asarray(scores), min_score,
                                   iou_threshold, max_detections):
        centre = letterbox.to_image(row[0:2])
        corner = letterbox.to_image(row[0:2] + np.array([row[2], row[3]]) / 2)
        half = corner - centre
        keypoints = letterbox.to_image(row[4:].reshape(NUM_KEYPOINTS, 2))
        out.append(Detection(score, (float(centre[0] - half[0]), float(centre[1] - half[1]),
                                     float(2 * half[0]), float(2 * half[1])), keypoints))
    return out


# The service crops a box at this many times its longer side (service.core.CROP_MARGIN, the
# training framing); a detection's box is the one whose crop is the detection's.
BOX_TO_CROP = 1.5


def detection_box(detection: Detection, width: float, height: float, clip_cut: bool = True
                  ) -> tuple[float, float, float, float]:
    """The person's box (x, y, w, h) in image pixels, which the service crops like a box of
    the request (centre kept, side BOX_TO_CROP x its longer side).

    Normally the square whose crop is `detection_crop`'s. When the mid-hip lies outside the
    picture (a portrait, a body cut by the frame; `clip_cut`), the detector's full-body circle
    reaches far beyond what is seen and its crop would show the person small in a mostly black
    square: the box is then the part of the full-body square inside the picture, as a user
    would box the visible part, and the service's re-framing (`posecontract.framing`) places
    the whole body from the joints it sees there.
    """
    (cx, cy), r = detection.keypoints[0], detection.body_radius
    if clip_cut and not (0 <= cx < width and 0 <= cy < height):
        x0, y0 = max(cx - r, 0.0), max(cy - r, 0.0)
        x1, y1 = min(cx + r, float(width)), min(cy + r, float(height))
        if x1 > x0 and y1 > y0:
            return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    (cx, cy), side = detection_crop(detection)
    half = side / BOX_TO_CROP / 2
    return (cx - half, cy - half, 2 * half, 2 * half)


def detection_crop(detection: Detection, centre_along: float | None = None,
                   side_per_radius: float | None = None) -> tuple[tuple[float, float], float]:
    """The pose model's crop for a detection: (centre x, y), side, in image pixels."""
    along = CROP_FROM_CIRCLE["centre_along"] if centre_along is None else centre_along
    per = CROP_FROM_CIRCLE["side_per_radius"] if side_per_radius is None else side_per_radius
    c, v = detection.keypoints[0], detection.keypoints[1] - detection.keypoints[0]
    centre = c + along * v
    return (float(centre[0]), float(centre[1])), float(per * detection.body_radius)


def window_batch(image: Image.Image, width: int, height: int, source_scale: float = 1.0,
                 tiles: bool = True) -> tuple[list[Letterbox], np.ndarray]:
    """The windows of a `width` x `height` picture (`windows`) and the detector's input for
    each, (n, 3, 224, 224) uint8, rendered from `image` (decoded at `source_scale`)."""
    views = windows(width, height, tiles)
    return views, np.stack([w.render(image, source_scale) for w in views])


def people_in_windows(boxes: np.ndarray, scores: np.ndarray, views: list[Letterbox],
           min_score: float = DEFAULT_MIN_SCORE, max_detections: int | None = None
           ) -> list[Detection]:
    """The exported detector's outputs for the windows `views` ((n, 2254, 12), (n, 2254)) ->
    the people of the picture, best first: each window's detections, merged across windows."""
    return merge_windows([detections(boxes[i], scores[i], w, min_score)
                          for i, w in enumerate(views)], max_detections)


def merge_windows(found: list[list[Detection]], max_detections: int | None = None,
                  distance: float = MERGE_DISTANCE) -> list[Detection]:
    """One list of people from the windows' detections (each list already suppressed): best
    score first, a detection is dropped when its mid-hip keypoint lies within `distance` x the
    larger full-body radius of its and a kept one's (the same person, seen in two windows)."""
    kept: list[Detection] = []
    for d in sorted((d for window in found for d in window), key=lambda d: -d.score):
        if any(np.linalg.norm(d.keypoints[0] - k.keypoints[0])
               < distance * max(d.body_radius, k.body_radius) for k in kept):
            continue
        kept.append(d)
        if max_detections is not None and len(kept) >= max_detections:
            break
    return kept


def write_detector_twin(production_repo: Path, out_repo: Path, intra_op_threads: int = 0,
                        runtime: str = "onnxruntime") -> Path:
    """The detector's CPU twin for Triton's Python backend (`posecontract.triton`), beside the
    pose model's: `<out_repo>/person-detector`, serving the production `model.onnx` with ONNX
    Runtime (or `model.pt` with torch), one warm-up batch."""
    options = replace(DETECTOR_SERVING, warmup_batch_sizes=(1,),
                      intra_op_threads=intra_op_threads)
    return write_cpu_twin(production_repo, DETECTOR_NAME, out_repo, options, runtime=runtime,
                          outputs=DETECTOR_OUTPUTS, input_spec=DETECTOR_INPUT)
