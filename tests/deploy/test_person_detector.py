"""The committed person detector (model_repository/person-detector): its configs, card and
files, and what it finds on the committed photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from posecontract.detection import (
    DEFAULT_MIN_SCORE,
    DETECTOR_INPUT,
    DETECTOR_NAME,
    DETECTOR_OUTPUTS,
    DETECTOR_SERVING,
    people_in_windows,
    window_batch,
)
from posecontract.triton import onnx_model_name, render_config, render_onnx_config

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "model_repository" / DETECTOR_NAME
VERSION = FOLDER / "1"
PHOTOS = ROOT / "data" / "photos"
# model.pt and model.onnx against each other and against the eager rebuild: the export's bound
# (training.export_detector.EXPORT_TOLERANCE), relative to 1 + |value|.
TOLERANCE = 5e-4


def detector_files() -> set[Path]:
    """The detector's model files, for test_model_repository's inventory."""
    return {VERSION / "model.pt", VERSION / "model.onnx"}


def test_configs_are_rendered_from_the_contract():
    config = (FOLDER / "config.pbtxt").read_text()
    assert config == render_config(DETECTOR_NAME, DETECTOR_SERVING, DETECTOR_OUTPUTS,
                                   DETECTOR_INPUT)
    onnx_dir = FOLDER.parent / onnx_model_name(DETECTOR_NAME)
    onnx = (onnx_dir / "config.pbtxt").read_text()
    assert onnx == render_onnx_config(onnx_model_name(DETECTOR_NAME), DETECTOR_SERVING,
                                      outputs=DETECTOR_OUTPUTS, input_spec=DETECTOR_INPUT)
    for text, platform in ((config, "pytorch_libtorch"), (onnx, "onnxruntime_onnx")):
        parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert parsed.platform == platform
        assert [(i.name, list(i.dims)) for i in parsed.input] == [("INPUT__0", [3, 224, 224])]
        assert [(o.name, list(o.dims)) for o in parsed.output] == [
            ("OUTPUT__0", [2254, 12]), ("OUTPUT__1", [2254])]
        assert parsed.max_batch_size == DETECTOR_SERVING.max_batch_size
    link = onnx_dir / "1"
    assert link.is_symlink() and os.readlink(link) == f"../{DETECTOR_NAME}/1"


def _card() -> dict:
    import torch

    files = {"model.json": ""}
    torch.jit.load(str(VERSION / "model.pt"), _extra_files=files)
    return json.loads(files["model.json"])


def test_the_card_names_the_source_and_the_contract():
    import onnx

    card = _card()
    assert card["name"] == DETECTOR_NAME and card["version"] == 1
    assert card["licence"] == "Apache-2.0" and len(card["sha256"]) == 64
    assert "blazepose_detector" in card["source"]
    assert [o["name"] for o in card["outputs"]] == [o.name for o in DETECTOR_OUTPUTS]
    meta = {p.key: p.value for p in onnx.load(str(VERSION / "model.onnx")).metadata_props}
    assert json.loads(meta["model.json"])["sha256"] == card["sha256"]
    for f in detector_files():
        assert f.stat().st_size <= 8 * 2**20  # float16 weights: ~6 MB each


def _windows_of(photo: str) -> tuple[list, np.ndarray]:
    image = Image.open(PHOTOS / photo).convert("RGB")
    return window_batch(image, image.width, image.height)


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / (1 + np.abs(b))).max())


def test_model_onnx_computes_what_model_pt_computes():
    import torch

    from posecontract.onnx_session import open_session

    module = torch.jit.load(str(VERSION / "model.pt")).eval()
    session = open_session(VERSION / "model.onnx", 0)
    _, batch = _windows_of("sports2d_frame075.jpg")
    with torch.inference_mode():
        ours = [t.numpy() for t in module(torch.from_numpy(batch))]
    theirs = session.run(None, {DETECTOR_INPUT.name: batch})
    assert ours[0].shape == (4, 2254, 12) and ours[1].shape == (4, 2254)
    assert 0 <= ours[1].min() and ours[1].max() <= 1
    assert _relative(theirs[0], ours[0]) <= TOLERANCE
    assert _relative(theirs[1], ours[1]) <= TOLERANCE


def _find(photo: str, crop: tuple[int, int, int, int] | None = None):
    import torch

    module = torch.jit.load(str(VERSION / "model.pt")).eval()
    image = Image.open(PHOTOS / photo).convert("RGB")
    if crop:
        image = image.crop(crop)
    views, batch = window_batch(image, image.width, image.height)
    with torch.inference_mode():
        boxes, scores = module(torch.from_numpy(batch))
    return people_in_windows(boxes.numpy(), scores.numpy(), views)


def test_both_people_of_a_sports2d_frame_are_found_at_their_hips():
    # Frame 75: the woman walking on the right and the man standing on the box. Hips read off
    # the picture by eye (about 450 and 400 pixels tall people).
    found = _find("sports2d_frame075.jpg")
    assert len(found) == 2 and all(d.score >= DEFAULT_MIN_SCORE for d in found)
    hips = {"woman": (1280, 728), "man": (636, 285)}
    for who, hip in hips.items():
        nearest = min(np.linalg.norm(d.keypoints[0] - hip) for d in found)
        assert nearest < 60, who


def test_a_region_with_nobody_gives_nobody():
    assert _find("sports2d_frame225.jpg", (0, 0, 1300, 994)) == []
    assert _find("sports2d_frame075.jpg", (0, 470, 560, 994)) == []


@pytest.fixture(scope="module")
def rebuilt():
    """The detector rebuilt from the pinned .tflite file (skips without it, fails in CI)."""
    from training import blazepose

    try:
        blazepose.model_path("detector")
    except blazepose.ModelsMissing as exc:
        if os.environ.get("MARGIPOSE_REQUIRE_BLAZEPOSE") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_BLAZEPOSE=1 but {exc}")
        pytest.skip(str(exc))
    from training.export_detector import detector_model

    return detector_model()


def test_the_committed_file_is_the_converted_detector_with_its_decoding(rebuilt):
    """model.pt = the rebuild from MediaPipe's file (whose conversion is checked against the
    TFLite interpreter in tests/training/test_blazepose.py), and its in-graph decoding = the
    reference decoding in float64."""
    import torch

    from posecontract.detection import anchor_centres, decode_raw

    module = torch.jit.load(str(VERSION / "model.pt")).eval()
    _, batch = _windows_of("sports2d_frame075.jpg")
    images = torch.from_numpy(batch)
    with torch.inference_mode():
        committed = [t.numpy() for t in module(images)]
        eager = [t.numpy() for t in rebuilt(images)]
        raw = rebuilt.network(images.float() / 127.5 - 1)
    assert _relative(committed[0], eager[0]) <= TOLERANCE
    assert _relative(committed[1], eager[1]) <= TOLERANCE
    boxes, scores = decode_raw(raw[0].double().numpy(), raw[1].double().numpy(),
                               anchor_centres())
    assert _relative(eager[0], boxes) <= 1e-6 and _relative(eager[1], scores) <= 1e-6
