"""REST through a real uvicorn server and httpx, with the embedded TorchScript backend."""

import base64
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from posecontract.skeleton import JOINT_NAMES, ROOT

from .conftest import jpeg_bytes


def test_health_and_model(client):
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").status_code == 200
    model = client.get("/v1/model").json()
    assert model["joints"] == list(JOINT_NAMES)
    assert model["backend"] == "local" and model["name"] == "tiny-pose"
    assert model["version"] == "1" and model["input_size"] == 256
    assert model["card"]["source"] == "test fixture, untrained"


def test_raw_body_with_a_box(client):
    r = client.post("/v1/predict", content=jpeg_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                    params={"boxes": json.dumps([[100, 50, 80, 120]])})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 320, "height": 240}
    assert body["intrinsics_source"] == "default_fov"
    k = body["intrinsics"]
    assert k["cx"] == 160 and k["cy"] == 120 and k["fx"] == k["fy"] > 0
    (person,) = body["persons"]
    assert person["box_source"] == "request"
    assert person["crop"]["side"] == pytest.approx(180.0)  # 1.5 x the longer side
    assert person["crop"]["centre"] == pytest.approx([140.0, 110.0])
    assert [j["name"] for j in person["joints"]] == list(JOINT_NAMES)
    pixels = np.array([j["pixel"] for j in person["joints"]])
    # Every joint lies inside the crop the service says it used.
    assert np.all(np.abs(pixels - [140, 110]) <= 90)
    rel = np.array([j["relative_mm"] for j in person["joints"]])
    cam = np.array([j["camera_mm"] for j in person["joints"]])
    assert np.allclose(rel, cam - cam[ROOT])
    assert person["root_depth_source"] == "knee_neck_prior"
    unc = np.array([j["uncertainty_mm"] for j in person["joints"]])
    assert np.all(unc > 0) and np.all(np.isfinite(unc))
    assert {"decode", "model", "postprocess", "total"} <= set(body["timings_ms"])
    assert r.headers["x-request-id"]


def test_alias_and_multipart_with_intrinsics_and_f16_heatmaps(client):
    files = {"image": ("p.jpg", jpeg_bytes(seed=1), "image/jpeg")}
    data = {"boxes": "[[10, 20, 100, 150], [150, 30, 90, 160]]", "fx": "400", "fy": "410",
            "cx": "150", "cy": "115", "root_depth_mm": "3500", "heatmaps": "f16"}
    r = client.post("/predict", files=files, data=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intrinsics"] == {"fx": 400, "fy": 410, "cx": 150, "cy": 115}
    assert body["intrinsics_source"] == "request"
    assert len(body["persons"]) == 2
    for person in body["persons"]:
        assert person["root_depth_mm"] == 3500 and person["root_depth_source"] == "request"
        hm = person["heatmaps"]
        assert hm["format"] == "f16" and hm["shape"] == [3, 17, 32, 32]
        maps = np.frombuffer(base64.b64decode(hm["data"]), "<f2").reshape(hm["shape"])
        assert np.allclose(maps.astype(np.float32).sum(axis=(-2, -1)), 1, atol=1e-2)


def test_png_heatmaps_decode_back(client):
    files = {"image": ("p.jpg", jpeg_bytes(seed=2), "image/jpeg")}
    r = client.post("/v1/predict", files=files,
                    data={"boxes": "[[50, 50, 100, 100]]", "heatmaps": "png"})
    assert r.status_code == 200, r.text
    hm = r.json()["persons"][0]["heatmaps"]
    mosaic = np.array(Image.open(io.BytesIO(base64.b64decode(hm["data"]))))
    assert mosaic.shape == (3 * 32, 17 * 32)
    tiles = mosaic.reshape(3, 32, 17, 32).transpose(0, 2, 1, 3) / 65535.0
    maps = tiles * np.array(hm["scale"]).reshape(3, 17, 1, 1)
    assert np.allclose(maps.sum(axis=(-2, -1)), 1, atol=2e-3)


def test_auto_crop_without_boxes(client):
    r = client.post("/v1/predict", content=jpeg_bytes(seed=3),
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    (person,) = body["persons"]
    assert person["box_source"] == "auto"
    assert {"model_pass1", "model_pass2"} <= set(body["timings_ms"])
    box = person["box"]
    pixels = np.array([j["pixel"] for j in person["joints"]])
    assert box["w"] > 0 and box["h"] > 0
    assert person["crop"]["side"] == pytest.approx(1.5 * max(box["w"], box["h"]), rel=1e-6)
    assert np.isfinite(pixels).all()


def _error(r, status, code, fragment):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert fragment in err["message"], err["message"]


def test_error_matrix_and_health_after(client, server):
    jpeg = jpeg_bytes()
    post = client.post
    raw = {"Content-Type": "image/jpeg"}
    _error(post("/v1/predict", content=b"hello", headers={"Content-Type": "text/plain"}),
           415, "unsupported_media_type", "image/jpeg")
    _error(post("/v1/predict", content=jpeg[: len(jpeg) // 2], headers=raw),
           422, "invalid_image", "")
    _error(post("/v1/predict", content=b"", headers=raw), 422, "invalid_image", "")
    _error(post("/v1/predict", content=b"\0" * 2_100_000, headers=raw),
           413, "payload_too_large", "2000000")
    big = Image.new("RGB", (2500, 2000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    _error(post("/v1/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"}),
           413, "image_too_large", "")
    for boxes, fragment in [
        ([[400, 10, 50, 50]], "outside"),
        ([[10, 10, 0, 50]], "must be > 0"),
        ([[10, 10, 5, 5]] * 5, "at most 4"),
        ("[[1, 2, 3]]", "list of [x, y, w, h]"),
        ("nonsense", "JSON"),
    ]:
        value = boxes if isinstance(boxes, str) else json.dumps(boxes)
        _error(post("/v1/predict", content=jpeg, headers=raw, params={"boxes": value}),
               422, "invalid_request", fragment)
    _error(post("/v1/predict", content=jpeg, headers=raw,
                params={"fx": "0", "fy": "10", "cx": "1", "cy": "1"}),
           422, "invalid_request", "Focal lengths")
    _error(post("/v1/predict", content=jpeg, headers=raw, params={"fx": "500"}),
           422, "invalid_request", "fx, fy, cx, cy")
    _error(post("/v1/predict", content=jpeg, headers=raw, params={"colour": "red"}),
           422, "invalid_request", "colour")
    _error(post("/v1/predict", content=jpeg, headers=raw, params={"heatmaps": "jpeg"}),
           422, "invalid_request", "heatmaps")
    _error(post("/v1/predict", content=jpeg, headers=raw, params={"root_depth_mm": "-5"}),
           422, "invalid_request", "root_depth_mm")
    _error(post("/v1/predict", files={"photo": ("p.jpg", jpeg, "image/jpeg")}),
           422, "invalid_request", "`image`")
    _error(post("/v1/predict", files={"image": ("p.jpg", jpeg, "image/jpeg"),
                                      "mask": ("m.png", jpeg, "image/png")}),
           422, "invalid_request", "mask")

    # After all of that the service is healthy and answers a good request.
    assert client.get("/health/ready").status_code == 200
    assert post("/v1/predict", content=jpeg, headers=raw).status_code == 200
    assert server.service.batcher.queue_depth == 0


def test_metrics_exposition(client):
    client.post("/v1/predict", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'margipose_requests_total{route="/v1/predict",status="200",transport="rest"}' in text
    for name in ("margipose_request_duration_seconds_bucket", "margipose_batch_size_bucket",
                 'margipose_stage_duration_seconds_bucket{le="0.005",stage="inference"}',
                 "margipose_queue_depth", "margipose_in_flight_requests",
                 "margipose_persons_per_request_bucket", 'margipose_model_info{backend="local"'):
        assert name in text, name
    # Idle: nothing in flight, and the scrape does not count itself.
    assert "\nmargipose_in_flight_requests 0.0\n" in text


def test_openapi_documents_v1(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/model", "/health/live", "/health/ready"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_promtool_accepts_the_exposition(client):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("MARGIPOSE_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    client.post("/v1/predict", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    exposition = client.get("/metrics").content
    done = subprocess.run([promtool, "check", "metrics"], input=exposition,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_render_returns_a_png_with_three_panels(client):
    files = {"image": ("p.jpg", jpeg_bytes(seed=4), "image/jpeg")}
    r = client.post("/v1/render", files=files,
                    data={"boxes": "[[60, 40, 120, 160]]", "joint": "right_knee"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(r.content))
    assert picture.size == (3 * 512, 512)
    _error(client.post("/v1/render", files=files, data={"joint": "tail"}),
           422, "invalid_request", "Unknown joint 'tail'")
