"""`margipose` against the real gateway (REST and gRPC) and in-process (--local)."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poseclient import RestClient
from poseclient.cli import main
from posecontract.geometry import Intrinsics
from posecontract.skeleton import JOINT_NAMES
from service.settings import Settings
from tests.service.conftest import RunningServer, free_port, jpeg_bytes

from .conftest import MODEL_NAME, dead_url
from .test_video import write_gif, write_mp4

ROOT = Path(__file__).resolve().parents[2]


def margipose(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the command line in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], environ=environ or {}, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.jpg"
    path.write_bytes(jpeg_bytes(seed=11))
    return path


@pytest.fixture(scope="module")
def rest(server):
    with RestClient(server.url, timeout=60) as client:
        yield client


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timings_ms"}


def test_predict_over_rest_writes_the_response_and_the_picture(server, rest, photo, tmp_path):
    status, out, err = margipose("predict", photo, "--url", server.url, "--box", "100,50,80,120",
                                 "--out", tmp_path / "r.json", "--render", tmp_path / "r.png",
                                 "--joint", "neck")
    assert status == 0 and out == ""
    assert err.startswith(f"{photo}: 1 person, root depth ") and err.endswith(" ms\n")
    written = json.loads((tmp_path / "r.json").read_text())
    expected = rest.predict(photo, boxes=[[100, 50, 80, 120]])
    assert _without_timings(written) == _without_timings(expected.to_json())
    assert (tmp_path / "r.png").read_bytes() == rest.render(photo, joint="neck",
                                                            boxes=[[100, 50, 80, 120]])


def test_predict_over_grpc_draws_with_the_same_renderer(server, rest, photo, tmp_path):
    status, out, err = margipose("predict", photo, "--grpc", server.grpc_target,
                                 "--out", tmp_path / "g.json", "--render", tmp_path / "g.png")
    assert status == 0, err
    written = json.loads((tmp_path / "g.json").read_text())
    expected = rest.predict(photo)
    # Heatmaps were fetched for the picture only, not written to the JSON.
    assert _without_timings(written) == _without_timings(expected.to_json())
    picture = _pixels((tmp_path / "g.png").read_bytes())
    assert picture.shape == (512, 3 * 512, 3)
    assert np.array_equal(picture, _pixels(rest.render(photo)))


def test_predict_locally_without_a_server(model_repository, rest, photo, tmp_path):
    status, out, err = margipose("predict", photo, "--local", model_repository,
                                 "--box", "100,50,80,120", "--heatmaps",
                                 "--render", tmp_path / "l.png")
    assert status == 0, err
    (line,) = out.splitlines()
    local = json.loads(line)
    served = rest.predict(photo, boxes=[[100, 50, 80, 120]], heatmaps=True).to_json()
    assert local["model"] == served["model"]
    person, expected = local["persons"][0], served["persons"][0]
    assert [j["name"] for j in person["joints"]] == list(JOINT_NAMES)
    assert np.allclose([j["camera_mm"] for j in person["joints"]],
                       [j["camera_mm"] for j in expected["joints"]], atol=0.1)
    assert person["heatmaps"]["format"] == "f16"
    assert _pixels((tmp_path / "l.png").read_bytes()).shape == (512, 3 * 512, 3)


def test_several_images_boxes_and_field_of_view(server, tmp_path):
    for seed, name in ((1, "a.jpg"), (2, "b.jpg")):
        (tmp_path / name).write_bytes(jpeg_bytes(seed=seed))
    status, out, err = margipose("predict", tmp_path / "a.jpg", tmp_path / "b.jpg",
                                 "--url", server.url, "--fov", "90", "--box", "10,20,100,150",
                                 "--box", "150,30,90,160", "--out", tmp_path / "out/{stem}.json")
    assert status == 0 and len(err.splitlines()) == 2, err
    k = Intrinsics.from_fov(320, 240, 90)
    for stem in ("a", "b"):
        body = json.loads((tmp_path / f"out/{stem}.json").read_text())
        assert body["intrinsics"] == pytest.approx({"fx": k.fx, "fy": k.fy, "cx": 160, "cy": 120})
        assert [p["box_source"] for p in body["persons"]] == ["request", "request"]
    # Without --out: one JSON document per line on stdout.
    status, out, _ = margipose("predict", tmp_path / "a.jpg", tmp_path / "b.jpg", "--grpc",
                               server.grpc_target)
    assert status == 0 and [json.loads(x)["image"]["width"] for x in out.splitlines()] == [320] * 2


def test_model_is_the_same_everywhere(server, model_repository):
    bodies = []
    for where in (("--url", server.url), ("--grpc", server.grpc_target),
                  ("--local", model_repository, "--model", MODEL_NAME)):
        status, out, err = margipose("model", *where)
        assert status == 0, err
        bodies.append(json.loads(out))
    assert bodies[0]["name"] == MODEL_NAME and bodies[0]["card"]["source"] == \
        "test fixture, untrained"
    assert bodies[0] == bodies[1] == bodies[2]


def test_video_streams_every_frame_over_grpc(server, tmp_path):
    write_gif(tmp_path / "clip.gif", frames=3, size=(160, 120), duration_ms=40)
    status, out, err = margipose("video", tmp_path / "clip.gif", "--grpc", server.grpc_target,
                                 "--out", tmp_path / "poses.jsonl")
    assert status == 0, err
    lines = [json.loads(x) for x in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2]
    assert [x["time_s"] for x in lines] == pytest.approx([0.0, 0.04, 0.08])
    assert all(len(x["persons"]) == 1 and x["image"] == {"width": 160, "height": 120}
               for x in lines)
    # Each person carries a track id (the fixture's untrained model on these made-up frames
    # may jump: a jump beyond half a person's size starts a new id, never an old one).
    ids = [x["persons"][0]["track_id"] for x in lines]
    assert ids[0] == 1 and ids == sorted(ids) and all(isinstance(i, int) for i in ids)
    assert "3/3" in err  # the progress bar
    assert err.rstrip().endswith(f"clip.gif: 3 frames (pillow) to {tmp_path / 'poses.jsonl'}, "
                                 "0 failed")


def test_video_file_through_pyav(server, tmp_path):
    write_mp4(tmp_path / "clip.mp4", frames=4, size=(96, 64))
    status, out, err = margipose("video", tmp_path / "clip.mp4", "--grpc", server.grpc_target)
    assert status == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3]
    assert all(x["image"] == {"width": 96, "height": 64} for x in lines)


def test_video_frames_that_fail_are_written_and_counted(server, tmp_path):
    write_gif(tmp_path / "clip.gif", frames=2)
    status, out, err = margipose("video", tmp_path / "clip.gif", "--grpc", server.grpc_target,
                                 "--box", "1000,1000,10,10")
    assert status == 1
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["error"]["code"] for x in lines] == ["invalid_request"] * 2
    assert "lies outside the 64x48 image" in lines[0]["error"]["message"]
    assert err.splitlines()[-1] == "margipose: 2 of 2 frames failed; their lines carry the error"


def test_unreachable_service_is_one_line_naming_the_url(photo):
    url = dead_url()
    status, out, err = margipose("predict", photo, "--url", url)
    assert status == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"margipose: cannot reach POST {url}/v1/predict: ")
    assert "refused" in line.lower()
    target = f"127.0.0.1:{free_port()}"
    status, _, err = margipose("model", "--grpc", target)
    assert status == 1 and err.startswith(f"margipose: cannot reach {target} GetModel: ")
    assert len(err.splitlines()) == 1


def test_the_services_error_message_is_shown(server, photo):
    status, out, err = margipose("predict", photo, "--url", server.url, "--box", "1000,0,5,5")
    assert status == 1
    assert err == (f"margipose: POST {server.url}/v1/predict answered 422 invalid_request: "
                   "Box 0 [1000.0, 0.0, 5.0, 5.0] lies outside the 320x240 image\n")


def test_tokens_from_the_flag_or_the_environment(model_repository):
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), auth_tokens=["s3cret"])
    with RunningServer(settings) as guarded:
        status, out, err = margipose("model", "--url", guarded.url)
        assert status == 1 and err == (f"margipose: GET {guarded.url}/v1/model answered 401 "
                                       "unauthenticated: Missing or invalid bearer token\n")
        status, out, _ = margipose("model", "--url", guarded.url,
                                   environ={"MARGIPOSE_TOKEN": "s3cret"})
        assert status == 0 and json.loads(out)["name"] == MODEL_NAME
        status, out, _ = margipose("model", "--grpc", guarded.grpc_target, "--token", "s3cret",
                                   environ={"MARGIPOSE_TOKEN": "wrong"})
        assert status == 0 and json.loads(out)["name"] == MODEL_NAME


def test_bad_input_files(tmp_path):
    status, _, err = margipose("predict", tmp_path / "nope.jpg")
    assert status == 1 and err == f"margipose: No such image file: {tmp_path / 'nope.jpg'}\n"
    status, _, err = margipose("model", "--local", tmp_path / "empty")
    assert status == 1 and err == (f"margipose: Model repository {tmp_path / 'empty'} is not a "
                                   "folder\n")


@pytest.mark.parametrize("argv, message", [
    (["predict", "a.jpg", "--fx", "500"], "give all of --fx --fy --cx --cy or none; got only --fx"),
    (["predict", "a.jpg", "--fx", "1", "--fy", "1", "--cx", "1", "--cy", "1", "--fov", "60"],
     "give either --fx --fy --cx --cy or --fov, not both"),
    (["predict", "a.jpg", "--fov", "200"], "--fov must be in [1, 179] degrees, got 200.0"),
    (["predict", "a.jpg", "--box", "1,2,3"],
     "a box is x,y,w,h (four numbers, pixels), got '1,2,3'"),
    (["predict", "a.jpg", "b.jpg", "--out", "r.json"],
     "with several images --out needs {stem} in its path"),
    (["predict", "a.jpg", "--url", "http://x", "--grpc", "x:1"], "not allowed with argument"),
    (["predict", "a.jpg", "--model", "m"], "--model goes with --local"),
    (["predict", "a.jpg", "--joint", "nose"], "invalid choice: 'nose'"),
    (["model", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv, environ={})
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command_line(server):
    run = subprocess.run([sys.executable, "-m", "poseclient", "model", "--url", server.url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["name"] == MODEL_NAME


def test_local_picks_the_only_model_not_its_onnx_deployment(model_repository, tmp_path):
    """`<name>-onnx` serves `<name>`'s folders through links: not a second model to choose."""
    from poseclient.errors import BadInput
    from poseclient.local import pick_model
    from tests.conftest import MODEL_NAME

    assert (model_repository / f"{MODEL_NAME}-onnx" / "1").is_symlink()
    assert pick_model(model_repository) == MODEL_NAME
    other = tmp_path / "repo"
    for name in ("a", "b"):
        (other / name / "1").mkdir(parents=True)
        (other / name / "config.pbtxt").write_text("")
    with pytest.raises(BadInput, match="it holds a, b"):
        pick_model(other)


def test_video_smoothing_options_reach_the_server(server, tmp_path):
    # A real photo panned 3 pixels a frame: the (untrained) model's person moves a little.
    image = Image.open(Path(__file__).resolve().parents[2] / "data" / "photos" /
                       "astronaut.jpg").convert("RGB")
    pans = [image.crop((3 * i, 0, 3 * i + 400, 400)) for i in range(3)]
    pans[0].save(tmp_path / "clip.gif", save_all=True, append_images=pans[1:], duration=40)
    runs = {}
    for name, extra in {"raw": ["--no-smooth"], "default": [],
                        "steady": ["--min-cutoff", "0.01", "--beta", "0"]}.items():
        status, out, err = margipose("video", tmp_path / "clip.gif", "--grpc",
                                     server.grpc_target, *extra)
        assert status == 0, err
        runs[name] = [np.array([j["pixel"] for j in json.loads(x)["persons"][0]["joints"]])
                      for x in out.splitlines()]
    # Later frames are smoothed, the more the lower the cutoff: held near the first frame.
    moved_raw = np.abs(runs["raw"][2] - runs["raw"][0]).mean()
    moved_steady = np.abs(runs["steady"][2] - runs["steady"][0]).mean()
    assert moved_steady < 0.1 * moved_raw
    status, out, err = margipose("video", tmp_path / "clip.gif", "--grpc", server.grpc_target,
                                 "--min-cutoff", "-1")
    assert status == 1 and "tracking.min_cutoff must be a positive frequency" in out


def test_video_writes_an_mp4_with_the_skeletons_drawn(server, tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    write_mp4(tmp_path / "clip.mp4", frames=4, size=(96, 64))
    status, out, err = margipose("video", tmp_path / "clip.mp4", "--grpc", server.grpc_target,
                                 "--mp4", tmp_path / "drawn.mp4", "--mp4-width", "191")
    assert status == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    with av.open(str(tmp_path / "drawn.mp4")) as container:
        stream = container.streams.video[0]
        # 191 wide becomes 190 (even, for yuv420p), the height in proportion (127 -> 126).
        assert (stream.codec_context.width, stream.codec_context.height) == (190, 126)
        assert float(stream.average_rate) == pytest.approx(10)  # the input's rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == len(lines) == 4
    # The input is flat grey; each person's skeleton is drawn in colour over it.
    for frame, line in zip(frames, lines, strict=True):
        assert line["persons"]
        spread = frame.astype(int).max(axis=2) - frame.astype(int).min(axis=2)
        assert (spread > 60).sum() > 20  # coloured pixels: bones, joints and the label
