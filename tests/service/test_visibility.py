"""Per-joint visibility through the service: the postprocess rules (uncertainty of unseen
joints, root depth from the seen bones) and the real REST and gRPC paths, for a model with a
visibility head and for an older one without (the field is absent, not invented)."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
import torch

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from poseclient.results import PredictResult
from posecontract.geometry import Intrinsics, crop_points, make_crop, normalise
from posecontract.skeleton import JOINT_NAMES, ROOT, joint_index
from service.postprocess import (
    ROOT_DEPTH_PRIORS,
    SEEN,
    UNSEEN_STD_MM,
    blend_unseen,
    infer_root_depth,
    person_pose,
)
from service.settings import Settings
from tests.conftest import MODEL_NAME, fixture_model
from tests.service.conftest import RunningServer, free_port, jpeg_bytes
from training.export import export

LEGS = [joint_index(n) for n in ("right_knee", "right_ankle", "left_knee", "left_ankle")]

# An upright person, root-relative mm (x right, y down, z away), canonical joint order, with
# synthetic-train's mean proportions: trunk-and-head path 0.925 and shoulders-and-head 0.79 of
# the knee-neck length (905 mm here).
BODY = np.array([
    [0, -837, 10], [0, -480, 0], [-180, -470, 10], [-230, -200, 40], [-250, 40, 80],
    [180, -470, -10], [240, -220, -60], [300, 10, -120], [-110, 0, 10], [-120, 420, 60],
    [-120, 820, 40], [110, 0, -10], [130, 420, -70], [130, 820, -40], [0, 0, 0],
    [0, -240, 10], [0, -660, 10],
], dtype=np.float64)


def _scene(body: np.ndarray, depth: float = 4000.0):
    camera = Intrinsics(900.0, 900.0, 640.0, 360.0)
    joints = body + [150.0, 80.0, depth]
    uv = camera.project(joints)
    crop = make_crop(camera, tuple(uv.mean(axis=0)), 1.5 * float(np.ptp(uv, axis=0).max()), 256)
    moved = crop_points(crop, joints)
    ndc = normalise(moved, crop.camera, float(moved[ROOT, 2]), 256, 256)
    return ndc, crop, float(moved[ROOT, 2])


def test_unseen_joints_get_the_wide_spread_seen_ones_keep_theirs() -> None:
    std = np.full((17, 3), 20.0)
    v = np.linspace(0, 1, 17)
    out = blend_unseen(std, v)
    assert out[-1] == pytest.approx([20.0] * 3)  # v = 1: the heatmap's spread
    assert out[0] == pytest.approx([UNSEEN_STD_MM] * 3)  # v = 0: an unseen joint
    assert np.all(np.diff(out[:, 0]) < 0)  # widens as visibility falls
    assert np.all(out >= std)


@pytest.mark.parametrize("prior", range(len(ROOT_DEPTH_PRIORS)))
def test_each_prior_recovers_the_depth_of_a_skeleton_of_its_length(prior: int) -> None:
    chosen = ROOT_DEPTH_PRIORS[prior]
    # Scale the body so the chosen path has exactly the prior's length: its depth comes back.
    body = BODY * (chosen.length_mm / float(chosen.measure(BODY)))
    ndc, crop, depth = _scene(body)
    visibility = np.zeros(17)
    visibility[list(chosen.joints)] = 0.9
    # hide what an earlier prior needs but this one does not, so that this one is chosen
    for earlier in ROOT_DEPTH_PRIORS[:prior]:
        missing = earlier.joints - chosen.joints
        visibility[list(missing)] = 0.1
    z, source = infer_root_depth(ndc, crop, visibility)
    assert source == chosen.source
    assert z == pytest.approx(depth, rel=1e-9)


def test_root_depth_falls_back_in_order() -> None:
    ndc, crop, _ = _scene(BODY)
    seen = np.ones(17)
    assert infer_root_depth(ndc, crop, None)[1] == "knee_neck_prior"
    assert infer_root_depth(ndc, crop, seen)[1] == "knee_neck_prior"
    legs_gone = seen.copy()
    legs_gone[LEGS] = 0.0
    assert infer_root_depth(ndc, crop, legs_gone)[1] == "torso_head_prior"
    portrait = legs_gone.copy()
    portrait[[joint_index(n) for n in ("pelvis", "spine", "right_hip", "left_hip")]] = 0.0
    assert infer_root_depth(ndc, crop, portrait)[1] == "shoulder_head_prior"
    assert infer_root_depth(ndc, crop, np.zeros(17))[1] == "crop_size_prior"
    # The upper-body priors are calibrated to the knee-neck one: on a body of typical
    # proportions they agree.
    z_knee = infer_root_depth(ndc, crop, seen)[0]
    assert infer_root_depth(ndc, crop, legs_gone)[0] == pytest.approx(z_knee, rel=0.01)
    assert infer_root_depth(ndc, crop, portrait)[0] == pytest.approx(z_knee, rel=0.03)


def test_person_pose_carries_visibility_and_widens_unseen_uncertainty() -> None:
    ndc, crop, _ = _scene(BODY)
    std = np.full((17, 3), 0.01)
    plain = person_pose(ndc, std, crop)
    assert plain.visibility is None and plain.root_depth_source == "knee_neck_prior"
    v = np.full(17, 0.95)
    v[LEGS] = 0.02
    pose = person_pose(ndc, std, crop, visibility=v)
    assert pose.root_depth_source == "torso_head_prior"
    assert np.array_equal(pose.visibility, v)
    spread = np.linalg.norm(pose.uncertainty_mm, axis=1)
    assert spread[LEGS].min() > 0.9 * UNSEEN_STD_MM * np.sqrt(3 * 0.98)
    seen = [j for j in range(17) if j not in LEGS]
    assert spread[seen].max() < spread[LEGS].min()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Version 1 without a visibility head (as margipose-lite 1-3), version 2 with one that
    says the legs are unseen whatever the image."""
    repo = tmp_path_factory.mktemp("visibility_repository")
    export(fixture_model(None), repo, MODEL_NAME, 1, onnx=True)
    bias = torch.full((17,), 4.0)
    bias[LEGS] = -4.0
    export(fixture_model(bias), repo, MODEL_NAME, 2, onnx=True)
    return repo


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def served(request, two_versions):
    """Both versions served side by side, each by its own gateway."""
    running = {}
    with RunningServer(Settings(model_repository=two_versions, model_name=MODEL_NAME,
                                model_version=1, runtime=request.param,
                                port=free_port())) as old, \
         RunningServer(Settings(model_repository=two_versions, model_name=MODEL_NAME,
                                model_version=2, runtime=request.param,
                                port=free_port())) as new:
        running["old"], running["new"] = old, new
        yield running


def _rest(server: RunningServer) -> dict:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/v1/predict", content=jpeg_bytes(seed=4),
                        headers={"Content-Type": "image/jpeg"},
                        params={"boxes": json.dumps([[100, 50, 80, 120]])})
    assert r.status_code == 200, r.text
    return r.json()


def _grpc(server: RunningServer) -> pose_pb2.PredictResponse:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pose_pb2_grpc.PoseServiceStub(channel)
        return stub.Predict(pose_pb2.PredictRequest(
            image=jpeg_bytes(seed=4), boxes=[pose_pb2.Box(x=100, y=50, w=80, h=120)]),
            timeout=60)


def test_a_model_with_the_head_reports_visibility_over_rest_and_grpc(served) -> None:
    body = _rest(served["new"])
    (person,) = body["persons"]
    v = np.array([j["visibility"] for j in person["joints"]])
    assert np.all((v >= 0) & (v <= 1))
    assert np.all(v[LEGS] < SEEN) and np.all(np.delete(v, LEGS) >= SEEN)
    # the legs' uncertainty is wide; the root depth comes from the trunk and head
    unc = np.linalg.norm([j["uncertainty_mm"] for j in person["joints"]], axis=1)
    assert unc[LEGS].min() > 0.9 * UNSEEN_STD_MM
    assert person["root_depth_source"] in ("torso_head_prior", "shoulder_head_prior",
                                           "crop_size_prior")
    # gRPC says the same, to the bit (doubles both ways)
    (message,) = _grpc(served["new"]).persons
    assert all(j.HasField("visibility") for j in message.joints)
    assert [j.visibility for j in message.joints] == v.tolist()
    # the typed client result exposes it
    result = PredictResult.from_json(body)
    assert np.array_equal(result.persons[0].visibility(), v)
    assert [result.persons[0].joints[JOINT_NAMES[j]].seen for j in LEGS] == [False] * 4


def test_a_model_without_the_head_reports_no_visibility(served) -> None:
    body = _rest(served["old"])
    (person,) = body["persons"]
    assert all(j["visibility"] is None for j in person["joints"])
    assert person["root_depth_source"] == "knee_neck_prior"
    (message,) = _grpc(served["old"]).persons
    assert not any(j.HasField("visibility") for j in message.joints)
    result = PredictResult.from_json(body)
    assert result.persons[0].visibility() is None
    assert all(j.seen for j in result.persons[0].joints.values())


def test_render_draws_unseen_joints_apart(served) -> None:
    with httpx.Client(base_url=served["new"].url, timeout=60) as client:
        r = client.post("/v1/render", content=jpeg_bytes(seed=4),
                        headers={"Content-Type": "image/jpeg"},
                        params={"boxes": json.dumps([[100, 50, 80, 120]])})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from io import BytesIO

    from PIL import Image

    picture = np.asarray(Image.open(BytesIO(r.content)).convert("RGB"))
    # the grey of unseen rings and dashed bones is drawn (the legend's swatch alone is 9x9)
    grey = np.all(picture == (150, 150, 150), axis=-1)
    assert grey.sum() > 81
