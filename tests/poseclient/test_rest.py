"""RestClient and AsyncRestClient against the real gateway (uvicorn, the tiny model)."""

import io
import json
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from poseclient import (
    ApiError,
    AsyncRestClient,
    CallTimeout,
    Person,
    PredictResult,
    RestClient,
    Unreachable,
)
from posecontract.geometry import Intrinsics
from posecontract.skeleton import JOINT_NAMES, ROOT
from tests.service.conftest import jpeg_bytes, run

from .conftest import MODEL_NAME, dead_url


@pytest.fixture(scope="module")
def rest(server):
    with RestClient(server.url, timeout=60) as client:
        yield client


def test_predict_with_a_box_is_typed_and_equals_the_raw_api(rest, server):
    image = jpeg_bytes()
    result = rest.predict(image, boxes=[[100, 50, 80, 120]])
    assert isinstance(result, PredictResult) and result.request_id
    assert (result.width, result.height) == (320, 240)
    assert result.model.name == MODEL_NAME and result.intrinsics_source == "default_fov"
    (person,) = result.persons
    assert isinstance(person, Person) and person.box_source == "request"
    assert list(person.joints) == list(JOINT_NAMES)
    assert person.crop_side == pytest.approx(180.0) and person.heatmaps is None
    cam, rel = person.as_array("camera_mm"), person.as_array("relative_mm")
    assert cam.shape == (17, 3) and person.as_array("pixel").shape == (17, 2)
    assert np.allclose(rel, cam - cam[ROOT])
    assert np.all(person.as_array("uncertainty_mm") > 0)
    assert person.joints["left_wrist"].camera_mm == tuple(cam[JOINT_NAMES.index("left_wrist")])
    # The same request without the client gives the same body.
    raw = httpx.post(f"{server.url}/v1/predict", content=image, timeout=60,
                     headers={"Content-Type": "image/jpeg"},
                     params={"boxes": json.dumps([[100, 50, 80, 120]])}).json()
    assert {k: v for k, v in result.to_json().items() if k != "timings_ms"} == \
        {k: v for k, v in raw.items() if k != "timings_ms"}


def test_heatmaps_come_as_arrays_whichever_way_they_travel(rest, tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes(seed=2))
    f16 = rest.predict(path, boxes=[[50, 20, 100, 150]], heatmaps=True).persons[0]
    png = rest.predict(str(path), boxes=[[50, 20, 100, 150]], heatmaps="png").persons[0]
    assert f16.heatmaps.shape == (3, 17, 32, 32) and f16.heatmaps.dtype == np.float32
    # Each marginal is a distribution over its 32 x 32 cells.
    assert np.allclose(f16.heatmaps.sum(axis=(-1, -2)), 1, atol=1e-2)
    # PNG tiles keep 1/65535 of each peak; float16 about 3 significant digits.
    peak = f16.heatmaps.max()
    assert np.abs(png.heatmaps - f16.heatmaps).max() < 2e-3 * peak
    assert f16.heatmap("left_wrist").shape == (3, 32, 32)
    assert np.array_equal(f16.heatmap("neck"), f16.heatmaps[:, JOINT_NAMES.index("neck")])


def test_intrinsics_and_root_depth_go_through(rest):
    k = Intrinsics(400, 410, 150, 115)
    result = rest.predict(jpeg_bytes(), intrinsics=k, root_depth_mm=3500,
                          boxes=[(10, 20, 100, 150)])
    assert result.intrinsics == k and result.intrinsics_source == "request"
    person = result.persons[0]
    assert person.root_depth_source == "request"
    assert person.root_depth_mm == pytest.approx(3500)
    assert rest.predict(jpeg_bytes(), intrinsics=(400, 410, 150, 115)).intrinsics == k


def test_render_model_and_ready(rest):
    png = rest.render(jpeg_bytes(), joint="neck", boxes=[[100, 50, 80, 120]])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (3 * 512, 512)
    model = rest.model()
    assert model.name == MODEL_NAME and model.joints == JOINT_NAMES
    assert model.card["source"] == "test fixture, untrained"
    assert rest.ready() is True


def test_the_services_error_message_comes_through(rest, server):
    with pytest.raises(ApiError) as caught:
        rest.predict(jpeg_bytes(), boxes=[[1000, 1000, 10, 10]])
    e = caught.value
    assert e.status == 422 and e.code == "invalid_request" and not e.retryable
    assert e.message == "Box 0 [1000.0, 1000.0, 10.0, 10.0] lies outside the 320x240 image"
    assert str(e) == (f"POST {server.url}/v1/predict answered 422 invalid_request: "
                      f"{e.message}")
    assert e.request_id
    with pytest.raises(ApiError, match="415 unsupported_media_type"):
        rest.predict(b"plain text, not an image", content_type="text/plain")


def test_options_are_checked_before_sending(rest):
    with pytest.raises(ValueError, match=r"Box 0 must be \[x, y, w, h\], got \[1, 2, 3\]"):
        rest.predict(jpeg_bytes(), boxes=[[1, 2, 3]])
    with pytest.raises(ValueError, match="heatmaps must be one of none, f16, png"):
        rest.predict(jpeg_bytes(), heatmaps="jpeg")
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        RestClient(timeout=0)


def test_unreachable_service_names_the_url_and_cause():
    url = dead_url()
    with RestClient(url) as client, pytest.raises(Unreachable) as caught:
        client.model()
    assert str(caught.value).startswith(f"cannot reach GET {url}/v1/model: ")
    assert "refused" in str(caught.value).lower()


def test_a_silent_service_times_out_at_the_deadline():
    # A socket that accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with RestClient(url, timeout=0.3) as client:
            start = time.monotonic()
            with pytest.raises(CallTimeout, match=rf"GET {url}/v1/model did not answer within "
                                                  r"0.3 s"):
                client.model()
            assert 0.25 < time.monotonic() - start < 2
            with pytest.raises(CallTimeout, match="within 0.2 s"):
                client.predict(jpeg_bytes(), timeout=0.2)


def test_async_client_does_the_same(server):
    async def go():
        async with AsyncRestClient(server.url, timeout=60) as client:
            results = [await client.predict(jpeg_bytes(seed=s), boxes=[[100, 50, 80, 120]],
                                            heatmaps=True) for s in range(2)]
            model = await client.model()
            png = await client.render(jpeg_bytes())
            ready = await client.ready()
            with pytest.raises(ApiError, match="lies outside"):
                await client.predict(jpeg_bytes(), boxes=[[1000, 1000, 10, 10]])
        async with AsyncRestClient(dead_url()) as client:
            with pytest.raises(Unreachable, match="cannot reach GET http://127.0.0.1"):
                await client.model()
        return results, model, png, ready

    results, model, png, ready = run(go())
    with RestClient(server.url, timeout=60) as sync:
        expected = sync.predict(jpeg_bytes(seed=0), boxes=[[100, 50, 80, 120]], heatmaps=True)
    assert np.array_equal(results[0].persons[0].as_array(), expected.persons[0].as_array())
    assert np.array_equal(results[0].persons[0].heatmaps, expected.persons[0].heatmaps)
    assert not np.array_equal(results[1].persons[0].as_array(), expected.persons[0].as_array())
    assert model.name == MODEL_NAME and ready is True
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
