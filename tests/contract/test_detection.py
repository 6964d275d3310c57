"""The person detector's post-processing (posecontract.detection): anchors, decoding, NMS,
letterbox windows, merging and crops, on numbers worked out by hand."""

import numpy as np
import pytest
from PIL import Image

from posecontract.detection import (
    BOX_TO_CROP,
    CROP_FROM_CIRCLE,
    MERGE_DISTANCE,
    NUM_ANCHORS,
    Detection,
    Letterbox,
    anchor_centres,
    decode_raw,
    detection_box,
    detection_crop,
    detections,
    merge_windows,
    weighted_nms,
    windows,
)


def test_anchors_follow_the_ssd_layout():
    a = anchor_centres()
    assert a.shape == (NUM_ANCHORS, 2) == (28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6, 2)
    # Stride 8: 28 x 28 cells, two anchors each, row by row.
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[2 * 28], [0.5 / 28, 1.5 / 28])
    # Stride 16 starts after 1568 anchors; the three stride-32 layers share one 7 x 7 map with
    # six anchors per cell.
    np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(a[1568 + 392: 1568 + 392 + 6], [[0.5 / 7, 0.5 / 7]] * 6)
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7])


def test_decoding_adds_the_anchor_to_positions_not_to_sizes():
    anchors = np.array([[0.25, 0.75]], np.float32)
    raw = np.array([[22.4, -11.2, 44.8, 22.4, 0, 0, 112, 224, -22.4, 0, 0, 0]])
    boxes, scores = decode_raw(raw, np.array([[0.0]]), anchors)
    np.testing.assert_allclose(boxes[0], [0.35, 0.70, 0.2, 0.1, 0.25, 0.75, 0.75, 1.75,
                                          0.15, 0.75, 0.25, 0.75])
    assert scores[0] == 0.5
    # Logits are clipped to +-100 before the sigmoid, as MediaPipe does.
    _, s = decode_raw(raw, np.array([[-1e4]]), anchors)
    assert s[0] == pytest.approx(1 / (1 + np.exp(100)))


def _row(x, y, size=0.2, keypoints=None):
    kp = keypoints if keypoints is not None else [x, y] * 4
    return np.array([x, y, size, size, *kp], np.float64)


def test_weighted_nms_averages_overlaps_and_keeps_the_best_score():
    boxes = np.stack([_row(0.5, 0.5), _row(0.52, 0.5), _row(0.9, 0.9), _row(0.5, 0.5)])
    scores = np.array([0.9, 0.6, 0.7, 0.1])
    out = weighted_nms(boxes, scores, min_score=0.5)
    assert [s for s, _ in out] == [0.9, 0.7]
    # 0.52 overlaps 0.5 by IoU 0.82 > 0.3: merged, weights 0.9 and 0.6; 0.1 is under the score.
    assert out[0][1][0] == pytest.approx((0.9 * 0.5 + 0.6 * 0.52) / 1.5)
    np.testing.assert_allclose(out[1][1], boxes[2])
    assert len(weighted_nms(boxes, scores, 0.5, max_detections=1)) == 1
    assert weighted_nms(boxes, scores, 0.95) == []


def test_boxes_side_by_side_are_two_people():
    # IoU of two 0.2-wide squares 0.15 apart is 0.05/0.35 = 0.14: under 0.3, both stay.
    out = weighted_nms(np.stack([_row(0.4, 0.5), _row(0.55, 0.5)]), np.array([0.8, 0.7]), 0.5)
    assert len(out) == 2


def test_letterbox_maps_input_units_back_to_image_pixels():
    # 448 x 224 image: scale 0.5, 224 x 112 inside the square, 56 black rows above.
    lb = Letterbox(448, 224)
    assert lb.resized() == (224, 112) and lb.paste_at() == (0, 56)
    np.testing.assert_allclose(lb.to_image(np.array([[0.0, 56 / 224], [1.0, 168 / 224]])),
                               [[0, 0], [448, 224]])
    # A window of a larger image adds its offset.
    np.testing.assert_allclose(Letterbox(100, 100, 300, 50).to_image(np.array([0.5, 0.5])),
                               [350, 100])


def test_a_rendered_window_shows_the_image_where_to_image_says():
    image = np.zeros((300, 900, 3), np.uint8)
    image[100:140, 640:700] = 255  # a white patch centred at (670, 120)
    pil = Image.fromarray(image)
    for lb in windows(900, 300):
        pixels = lb.render(pil)
        assert pixels.shape == (3, 224, 224) and pixels.dtype == np.uint8
        ys, xs = np.nonzero(pixels[0] > 127)
        if len(xs) == 0:
            assert not (lb.left <= 670 < lb.left + lb.width)
            continue
        centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / 224
        np.testing.assert_allclose(lb.to_image(centre), [670, 120], atol=1.5)
    # Draft-decoded at half size: the same window, the same picture.
    half = pil.resize((450, 150), Image.Resampling.BOX)
    a = Letterbox(900, 300).render(pil).astype(int)
    b = Letterbox(900, 300).render(half, source_scale=0.5).astype(int)
    assert np.abs(a - b).mean() < 3


@pytest.mark.parametrize("size, lefts, tops", [
    ((1768, 994), [0, 387, 774], [0, 0, 0]),      # 16:9: the whole and three squares
    ((1080, 1920), [0, 0, 0], [0, 420, 840]),      # portrait: squares down the picture
    ((640, 480), [0, 160], [0, 0]),                # 4:3 (1.33): two squares
    ((512, 512), [], []),                          # square: the whole only
    ((600, 512), [], []),                          # under 1.2: the whole only
])
def test_windows_tile_elongated_images(size, lefts, tops):
    ws = windows(*size)
    assert (ws[0].width, ws[0].height, ws[0].left, ws[0].top) == (*size, 0, 0)
    assert [round(w.left) for w in ws[1:]] == lefts and [round(w.top) for w in ws[1:]] == tops
    assert all(w.width == w.height == min(size) for w in ws[1:])
    assert windows(*size, tiles=False) == ws[:1]


def _det(score, hip, radius):
    hip = np.asarray(hip, float)
    return Detection(score, (0, 0, 1, 1), np.stack([hip, hip - [0, radius], hip, hip]))


def test_merging_windows_keeps_one_detection_per_person():
    whole = [_det(0.7, (500, 500), 300), _det(0.65, (1500, 500), 200)]
    tile = [_det(0.95, (520, 480), 200)]  # the first person again: 28 px < 0.75 x 300
    merged = merge_windows([whole, tile])
    assert [d.score for d in merged] == [0.95, 0.65]
    assert merge_windows([whole, tile], max_detections=1)[0].score == 0.95
    # Farther apart than MERGE_DISTANCE x the larger radius: two people.
    far = [_det(0.9, (500 + MERGE_DISTANCE * 300 + 1, 500), 300)]
    assert len(merge_windows([whole[:1], far])) == 2


def test_detections_come_back_in_image_pixels():
    lb = Letterbox(448, 224)
    boxes = np.zeros((NUM_ANCHORS, 12))
    scores = np.zeros(NUM_ANCHORS)
    # One person: mid-hip at input (0.5, 0.5) = image (224, 112), circle point 0.25 input units
    # (56 input pixels, 112 image pixels) above it.
    boxes[7] = _row(0.5, 0.5, keypoints=[0.5, 0.5, 0.5, 0.25, 0.5, 0.4, 0.5, 0.3])
    scores[7] = 0.9
    (d,) = detections(boxes, scores, lb)
    assert d.score == pytest.approx(0.9)
    np.testing.assert_allclose(d.keypoints[:2], [[224, 112], [224, 0]])
    assert d.body_radius == pytest.approx(112)
    assert d.box == pytest.approx((224 - 44.8, 112 - 44.8, 89.6, 89.6))
    centre, side = detection_crop(d)
    assert side == pytest.approx(CROP_FROM_CIRCLE["side_per_radius"] * 112)
    assert centre == pytest.approx((224, 112 - CROP_FROM_CIRCLE["centre_along"] * 112))
    assert d.body_box() == pytest.approx((112, 0, 224, 224))


def test_the_box_of_a_detection_crops_its_crop_or_the_visible_part_of_a_cut_body():
    # Mid-hip inside the picture: the square whose 1.5x crop is the detection's crop.
    d = _det(0.9, (300, 400), 200)
    (cx, cy), side = detection_crop(d)
    x, y, w, h = detection_box(d, 640, 480)
    assert (x + w / 2, y + h / 2) == pytest.approx((cx, cy))
    assert w == h == pytest.approx(side / BOX_TO_CROP)
    # A portrait: the hips below the bottom edge. The box is the full-body square's part inside
    # the picture, as a user would box what is seen.
    portrait = _det(0.8, (250, 900), 800)
    assert detection_box(portrait, 512, 600) == pytest.approx((0, 100, 512, 500))
    assert detection_box(portrait, 512, 600, clip_cut=False) == pytest.approx(
        (250 - side_of(portrait) / 2,
         900 - CROP_FROM_CIRCLE["centre_along"] * 800 - side_of(portrait) / 2,
         side_of(portrait), side_of(portrait)))


def side_of(d: Detection) -> float:
    return detection_crop(d)[1] / BOX_TO_CROP
