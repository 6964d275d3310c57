"""Tests for the evaluation protocols: oracles, ten-crop, known errors, grouping and the CLI."""

import copy
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from posecontract.geometry import KNEE_NECK_MM, Intrinsics, knee_neck_length, uncrop_pixels
from training.camera import AUG_3D, crop_targets, reference_box
from training.checkpoint import save_checkpoint
from training.data.sample import ListSource, Sample
from training.evaluate import (
    MPI3DHP_ACTIVITIES,
    MULTICROP_OFFSETS_PX,
    PROTOCOLS,
    CropJob,
    Protocol,
    action_label,
    activity_label,
    aggregate,
    crop_jobs,
    crop_params,
    format_table,
    get_args_parser,
    main,
    model_predictor,
    predict_batch,
    protocol_for,
    run_predictions,
    sequence_label,
    summarise,
    ten_crop_params,
)
from training.export import ServingModel, calibrate_batchnorm, export
from training.metrics import AUC_THRESHOLDS_MM
from training.model import ModelConfig, build_model
from training.skeleton import EVAL_14, ROOT, joint_index

CAMERA = Intrinsics(520.0, 505.0, 165.0, 118.0)  # fx != fy, principal point off-centre
WIDTH, HEIGHT = 320, 240
R_WRIST = joint_index("right_wrist")
H36M, MPI3D = PROTOCOLS["h36m"], PROTOCOLS["mpi3d"]


def _person(shift: tuple[float, float, float]) -> np.ndarray:
    """An asymmetric canonical skeleton (17, 3) in camera mm, pelvis at `shift`."""
    offsets = np.array([
        [10, -700, 30], [0, -480, 0], [-180, -470, 20], [-230, -200, 60], [-250, 40, 120],
        [170, -475, -10], [260, -230, -80], [320, -10, -160], [-110, 0, 10], [-130, 380, 90],
        [-120, 760, 40], [100, 5, -10], [150, 400, -120], [160, 800, -60], [0, 0, 0],
        [0, -240, 10], [5, -590, 15],
    ], dtype=np.float64)
    return offsets + np.asarray(shift)


def _sample(i: int, **meta) -> Sample:
    """Example `i`: a person placed differently per i in a noise image."""
    joints = _person((-200.0 + 90 * i, 60.0 - 30 * i, 4200.0 + 350 * i))
    pixels = np.random.default_rng(i).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Sample(Image.fromarray(pixels), CAMERA, joints, np.ones(17, bool), True,
                  reference_box(CAMERA, joints), AUG_3D, {"dataset": "test", **meta})


def _source(n: int = 3, **meta) -> ListSource:
    return ListSource("test", [_sample(i, **meta) for i in range(n)])


def _oracle(perturb: Callable[[CropJob, np.ndarray], np.ndarray] | None = None,
            seen: list[CropJob] | None = None):
    """A predictor returning each crop's GT normalised joints, after `perturb` in camera mm."""

    def predict(jobs):
        out = []
        for job in jobs:
            joints = job.sample.joints.copy()
            if perturb is not None:
                joints = perturb(job, joints)
            out.append(crop_targets(joints, job.crop)[1])
            if seen is not None:
                seen.append(job)
        return np.stack(out)

    return predict


def _shift(joint: int, dx: float):
    """Perturbation moving one joint by dx mm along the camera's X axis."""

    def perturb(job, joints):
        joints[joint, 0] += dx
        return joints

    return perturb


def _evaluate(source, predictor, protocol, multicrop=False, batch_size=4):
    preds = run_predictions(source, predictor, protocol, crop_params(multicrop), batch_size)
    return preds, summarise(preds, protocol)


def test_protocol_choice_follows_the_spec():
    assert protocol_for("h36m-test") is H36M
    assert protocol_for("mpi3d-test") is MPI3D and protocol_for("mpi3d-val") is MPI3D
    assert H36M.known_depth and H36M.joints is None
    assert not MPI3D.known_depth and MPI3D.joints == EVAL_14 == tuple(range(14))


def test_h36m_oracle_with_gt_depth_is_exact():
    preds, summary = _evaluate(_source(), _oracle(), H36M)
    gt = np.stack([s.joints - s.joints[ROOT] for s in _source()])
    np.testing.assert_allclose(preds.gt, gt)
    assert np.abs(preds.pred - preds.gt).max() < 1e-6
    assert summary["overall"]["mpjpe"] < 1e-6 and summary["overall"]["pa_mpjpe"] < 1e-6
    assert summary["overall"]["count"] == 3


def test_mpi3d_oracle_error_is_the_depth_prior_alone():
    source = _source()
    preds, summary = _evaluate(source, _oracle(), MPI3D)
    expected = []
    for i, s in enumerate(source):
        scale = KNEE_NECK_MM / knee_neck_length(s.joints)  # the prior rescales about the camera
        assert abs(scale - 1) > 0.02  # the test skeleton's knee-neck is not 920 mm
        rel = s.joints - s.joints[ROOT]
        np.testing.assert_allclose(preds.pred[i], scale * rel, atol=1e-6)
        expected.append(abs(scale - 1) * np.linalg.norm(rel[list(EVAL_14)], axis=-1).mean())
    overall = summary["overall"]
    assert overall["mpjpe"] > 5.0  # the prior's error is real ...
    assert overall["mpjpe"] == pytest.approx(np.mean(expected), abs=1e-6)  # ... and all there is
    assert overall["pa_mpjpe"] < 1e-6 and overall["pa_pck"] == 1.0
    assert overall["pa_auc"] == pytest.approx(30 / 31)  # threshold 0 never counts


def test_ten_crop_params_are_the_reference_crops():
    params = ten_crop_params()
    assert [p.jitter for p in params] == list(MULTICROP_OFFSETS_PX) * 2
    assert [p.flip for p in params] == [False] * 5 + [True] * 5
    assert all(p.scale == 1.0 and p.rotation == 0.0 for p in params)
    assert MULTICROP_OFFSETS_PX == ((0, 0), (-8, 0), (0, -8), (8, 0), (0, 8))
    assert crop_params(False) == (crop_params(False)[0],) and crop_params(False)[0].jitter == (0, 0)


def test_ten_crop_oracle_uses_ten_shifted_and_flipped_crops():
    source = _source(2)
    seen: list[CropJob] = []
    preds, summary = _evaluate(source, _oracle(seen=seen), H36M, multicrop=True, batch_size=7)
    assert summary["overall"]["mpjpe"] < 1e-6 and np.abs(preds.pred - preds.gt).max() < 1e-6
    assert len(seen) == 20 and [j.index for j in seen] == [0] * 10 + [1] * 10
    for index in (0, 1):
        jobs = [j for j in seen if j.index == index]
        box = source[index].box
        # Where each crop's centre lies in the source image, and whether it is mirrored.
        centres = [uncrop_pixels(j.crop, np.array([128.0, 128.0])) - box.centre for j in jobs]
        np.testing.assert_allclose(centres, list(MULTICROP_OFFSETS_PX) * 2, atol=1e-9)
        assert [j.crop.flipped for j in jobs] == [False] * 5 + [True] * 5
        for j in jobs:  # no scale jitter: the crop spans the reference box side
            assert j.crop.camera.fx == pytest.approx(CAMERA.fx * 256 / box.side)
        # The flipped centre crop is the plain centre crop mirrored.
        diff = jobs[5].image.astype(int) - jobs[0].image[:, ::-1].astype(int)
        assert np.abs(diff).max() <= 1

    # With the skeleton prior every crop infers the same scale, so ten crops change nothing.
    single, _ = _evaluate(source, _oracle(), MPI3D)
    multi, _ = _evaluate(source, _oracle(), MPI3D, multicrop=True)
    np.testing.assert_allclose(multi.pred, single.pred, atol=1e-6)


@pytest.mark.parametrize("multicrop", [False, True])
def test_known_perturbation_gives_known_mpjpe(multicrop):
    source = _source(2)
    _, wrist = _evaluate(source, _oracle(_shift(R_WRIST, 10.0)), H36M, multicrop)
    assert wrist["overall"]["mpjpe"] == pytest.approx(10 / 17, abs=1e-6)
    # Moving the root moves every other joint of the root-relative skeleton.
    _, root = _evaluate(source, _oracle(_shift(ROOT, 10.0)), H36M, multicrop)
    assert root["overall"]["mpjpe"] == pytest.approx(16 * 10 / 17, abs=1e-6)


def test_pck_and_auc_on_the_14_joints():
    protocol = Protocol("gt-depth-14", True, EVAL_14, ("pck", "auc", "mpjpe"), ())
    _, summary = _evaluate(_source(2), _oracle(_shift(R_WRIST, 200.0)), protocol)
    overall = summary["overall"]
    assert overall["mpjpe"] == pytest.approx(200 / 14, abs=1e-6)
    assert overall["pck"] == pytest.approx(13 / 14)
    assert overall["auc"] == pytest.approx((len(AUC_THRESHOLDS_MM) - 1) / 31 * 13 / 14)
    # Joints outside the 14 are not scored: moving the head leaves every number perfect.
    _, head = _evaluate(_source(2), _oracle(_shift(joint_index("head"), 200.0)), protocol)
    assert head["overall"]["mpjpe"] < 1e-6 and head["overall"]["pck"] == 1.0


def test_group_labels():
    assert action_label({"action": 2}) == "Directions"
    assert action_label({"action": np.int64(16)}) == "WalkingTogether"
    assert action_label({"action": "WalkingDog-1"}) == "WalkingDog"
    assert action_label({"action": "10"}) == "SittingDown"
    assert activity_label({"activity": 5}) == "On the Floor"
    assert activity_label({"activity": 7}) == "Miscellaneous"
    assert sequence_label({"subject": 1, "sequence": 1}) == "S1/Seq1"
    assert sequence_label({"subject": 3, "sequence": "TS3"}) == "TS3"  # the reader's label
    assert sequence_label({"subject": 9}) == "S9"
    # The numeric id wins over a differently spelt name.
    assert activity_label({"activity_id": 5, "activity": "On The Floor"}) == "On the Floor"
    assert action_label({"action_id": 9, "action": "Sitting"}) == "Sitting"
    assert action_label({}) == activity_label({}) == sequence_label({}) == "(unknown)"


def test_aggregate_is_the_mean_per_group():
    values = {"mpjpe": np.array([1.0, 2.0, 4.0, 8.0, 16.0]), "pck": np.array([1, 0, 1, 1, 0.5])}
    table = aggregate(values, ["b", "a", "b", "S10", "S2"], order=["b"])
    assert list(table) == ["b", "S2", "S10", "a"]
    assert table["b"] == {"mpjpe": 2.5, "pck": 1.0, "count": 2}
    assert table["a"] == {"mpjpe": 2.0, "pck": 0.0, "count": 1}
    assert table["S2"]["mpjpe"] == 16.0 and table["S10"]["count"] == 1
    with pytest.raises(ValueError, match=r"shape \(5,\); expected \(4,\)"):
        aggregate(values, ["a"] * 4)


def test_tables_per_sequence_and_activity_equal_hand_means():
    # Example i has its wrist moved by d_i, so its 14-joint MPJPE is d_i / 14.
    moves = [14.0, 28.0, 70.0, 140.0]
    groups = [(1, 1, 1), (1, 1, 3), (2, 1, 1), (2, 1, 1)]  # subject, sequence, activity
    source = ListSource("test", [_sample(i, subject=s, sequence=q, activity=a)
                                 for i, (s, q, a) in enumerate(groups)])
    protocol = Protocol("gt-depth-14", True, EVAL_14, ("mpjpe",), ("sequence", "activity"))

    def perturb(job, joints):
        joints[R_WRIST, 0] += moves[job.index]
        return joints

    _, summary = _evaluate(source, _oracle(perturb), protocol)
    sequences, activities = summary["groups"]["sequence"], summary["groups"]["activity"]
    assert list(sequences) == ["S1/Seq1", "S2/Seq1"]
    assert sequences["S1/Seq1"]["mpjpe"] == pytest.approx((1 + 2) / 2, abs=1e-6)
    assert sequences["S2/Seq1"]["mpjpe"] == pytest.approx((5 + 10) / 2, abs=1e-6)
    assert list(activities) == ["Standing/Walking", "Sitting"]
    assert activities["Standing/Walking"]["mpjpe"] == pytest.approx((1 + 5 + 10) / 3, abs=1e-6)
    assert activities["Standing/Walking"]["count"] == 3
    assert activities["Sitting"]["mpjpe"] == pytest.approx(2.0, abs=1e-6)
    assert summary["overall"]["mpjpe"] == pytest.approx(18 / 4, abs=1e-6)

    text = format_table("activity", activities, ("mpjpe",))
    lines = text.splitlines()
    assert lines[0].split() == ["activity", "n", "MPJPE", "mm"]
    assert lines[2].split() == ["Standing/Walking", "3", "5.3"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_predict_batch_splits_and_checks_shapes():
    jobs = crop_jobs(0, _sample(0), ten_crop_params())
    sizes = []

    def record(chunk):
        sizes.append(len(chunk))
        return _oracle()(chunk)

    assert predict_batch(record, jobs, 4).shape == (10, 17, 3)
    assert sizes == [4, 4, 2]
    with pytest.raises(ValueError, match=r"\(4, 17, 3\).*got \(4, 17, 2\)"):
        predict_batch(lambda chunk: np.zeros((len(chunk), 17, 2)), jobs, 4)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        predict_batch(record, jobs, 0)


def test_worker_processes_give_the_same_predictions():
    source = _source(3)
    alone = run_predictions(source, _oracle(_shift(R_WRIST, 10.0)), H36M, crop_params(True), 8)
    pooled = run_predictions(source, _oracle(_shift(R_WRIST, 10.0)), H36M, crop_params(True), 8,
                             workers=1)
    np.testing.assert_array_equal(pooled.pred, alone.pred)
    assert pooled.meta == alone.meta


def test_model_predictor_feeds_the_model_its_normalised_crop(tiny_model):
    jobs = crop_jobs(0, _sample(0), crop_params(True)[:3])
    # In float64: the served normalisation, (x - 255 mean) / (255 std), and the one below are
    # equal in exact arithmetic, and float64 keeps the network from amplifying their float32
    # rounding into differences that depend on the CPU's kernels.
    model = copy.deepcopy(tiny_model).double()
    serving = ServingModel(model)
    got = model_predictor(serving, "cpu")(jobs)
    # Independently: HWC uint8 -> CHW floats in 0..1 -> the model's input normalisation, with
    # the served constants (the config's mean and std rounded to float32 after scaling by 255).
    images = torch.tensor(np.stack([j.image for j in jobs]), dtype=torch.float64) / 255
    mean, std = serving.mean / 255, serving.std / 255
    assert torch.allclose(mean.flatten(), torch.tensor(tiny_model.cfg.input_mean).double())
    with torch.no_grad():
        want, _, _ = model((images.permute(0, 3, 1, 2) - mean) / std)
    assert got.shape == (3, 17, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-9)


def test_2d_only_sources_are_refused():
    s = _sample(0)
    flat = Sample(s.image, s.camera, s.joints, s.mask, False, s.box, s.augmentation, s.meta)
    with pytest.raises(ValueError, match="2D-only"):
        run_predictions(ListSource("mpii", [flat]), _oracle(), H36M, crop_params(False))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_stages=1, feat_channels=16, mid_channels=32, name="tiny"),
                        pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)
    return model


def _factory(calls, source):
    def open_source(spec, root):
        calls.append((spec, root))
        return source

    return open_source


def _cli(tmp_path, model_flag, dataset, extra=()):
    out = tmp_path / f"{dataset}.json"
    argv = [*model_flag, "--dataset", dataset, "--data-root", str(tmp_path / "data"),
            "--device", "cpu", "--batch-size", "8", "--out", str(out), *extra]
    return get_args_parser().parse_args(argv), out


def test_cli_end_to_end_with_a_checkpoint(tmp_path, tiny_model, capsys):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model, step=3)
    source = _source(3, subject=9, action=2)
    calls = []
    args, out = _cli(tmp_path, ["--checkpoint", str(ckpt)], "h36m-test", ["--limit", "2"])
    results = main(args, open_source=_factory(calls, source))
    assert calls == [("h36m-test", tmp_path / "data")]

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(results))
    assert set(written) == {"dataset", "data_root", "checkpoint", "torchscript", "samples",
                            "protocol", "overall", "groups"}
    assert written["dataset"] == "h36m-test" and written["checkpoint"] == str(ckpt)
    assert written["torchscript"] is None and written["samples"] == 2
    protocol = written["protocol"]
    assert protocol["name"] == "h36m" and protocol["known_depth"] is True
    assert protocol["joints"] == list(range(17)) and protocol["multicrop"] is False
    assert protocol["crops"] == [{"offset_px": [0.0, 0.0], "flip": False}]
    overall = written["overall"]
    assert set(overall) == {"mpjpe", "pa_mpjpe", "count"} and overall["count"] == 2
    assert math.isfinite(overall["mpjpe"]) and overall["pa_mpjpe"] <= overall["mpjpe"]
    assert written["groups"]["action"]["Directions"]["count"] == 2
    printed = capsys.readouterr().out
    assert "MPJPE mm" in printed and "Directions" in printed and "PA-MPJPE mm" in printed


def test_cli_torchscript_matches_the_checkpoint(tmp_path, tiny_model):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    exported = export(tiny_model, tmp_path / "repo", "tiny")
    source = _source(1, subject=1, sequence=1, activity=3)
    runs = {}
    for flag in (["--checkpoint", str(ckpt)], ["--torchscript", str(exported.model_path)]):
        args, _ = _cli(tmp_path, flag, "mpi3d-test", ["--multicrop"])
        runs[flag[0]] = main(args, open_source=_factory([], source))
    script, eager = runs["--torchscript"], runs["--checkpoint"]
    assert script["torchscript"] == str(exported.model_path) and script["checkpoint"] is None
    assert script["protocol"]["name"] == "mpi3d" and len(script["protocol"]["crops"]) == 10
    assert set(script["overall"]) == {"pck", "auc", "mpjpe", "pa_pck", "pa_auc", "pa_mpjpe",
                                      "count"}
    assert set(script["groups"]) == {"sequence", "activity"}
    assert list(script["groups"]["activity"]) == ["Sitting"]
    # TorchScript folds BatchNorm into the convolutions, which moves float32 outputs by ~1e-5
    # of the crop (~0.01 mm here), by CPU-dependent amounts: mean errors agree closely, and a
    # joint lying that close to a PCK/AUC threshold may flip, one joint of the 17 at most.
    assert script["overall"]["count"] == eager["overall"]["count"] == 1
    for key in ("mpjpe", "pa_mpjpe"):
        assert script["overall"][key] == pytest.approx(eager["overall"][key], rel=1e-3), key
    for key in ("pck", "auc", "pa_pck", "pa_auc"):
        assert abs(script["overall"][key] - eager["overall"][key]) <= 1 / 17 + 1e-9, key


def test_the_registry_needs_a_data_root(tmp_path):
    args = get_args_parser().parse_args(
        ["--checkpoint", str(tmp_path / "none.pt"), "--dataset", "h36m-test"])
    with pytest.raises(SystemExit, match="--data-root is needed to open 'h36m-test'"):
        main(args)


# ----------------------------------------------------------------------------- on-disk readers


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Tiny Human3.6M and MPI-INF-3DHP trees in their on-disk formats, with their truth."""
    from tests.training.data_fixtures import write_h36m, write_mpi3dhp

    root = tmp_path_factory.mktemp("data")
    return root, {**write_h36m(root), **write_mpi3dhp(root)}


def test_registry_sources_through_the_protocols(data_root):
    from training.data.registry import open_dataset

    root, truth = data_root
    h36m = open_dataset("h36m-test", root)
    preds, summary = _evaluate(h36m, _oracle(), H36M)
    assert summary["overall"]["mpjpe"] < 1e-6 and summary["overall"]["count"] == len(h36m)
    assert summary["groups"]["action"] == {"Sitting": {**summary["overall"]}}

    mpi3d = open_dataset("mpi3d-test", root)
    preds, summary = _evaluate(mpi3d, _oracle(), MPI3D, multicrop=True, batch_size=10)
    assert summary["overall"]["pa_mpjpe"] < 1e-6
    expected_sequences = {}
    expected_activities = {}
    for t in truth["mpi3d-test"]:
        seq, act = t.meta["sequence"], MPI3DHP_ACTIVITIES[t.meta["activity_id"]]
        expected_sequences[seq] = expected_sequences.get(seq, 0) + 1
        expected_activities[act] = expected_activities.get(act, 0) + 1
    groups = summary["groups"]
    assert {k: v["count"] for k, v in groups["sequence"].items()} == expected_sequences
    assert list(groups["sequence"]) == ["TS1", "TS5"]
    assert {k: v["count"] for k, v in groups["activity"].items()} == expected_activities
    order = list(MPI3DHP_ACTIVITIES.values())
    assert list(groups["activity"]) == sorted(expected_activities, key=order.index)


def test_cli_on_the_registry(data_root, tmp_path, tiny_model):
    root, _ = data_root
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    out = tmp_path / "mpi3d.json"
    args = get_args_parser().parse_args(
        ["--checkpoint", str(ckpt), "--dataset", "mpi3d-test", "--data-root", str(root),
         "--device", "cpu", "--limit", "3", "--out", str(out)])
    results = main(args)
    assert json.loads(out.read_text())["samples"] == results["samples"] == 3
    assert results["overall"]["count"] == 3 and math.isfinite(results["overall"]["mpjpe"])
    assert list(results["groups"]["sequence"]) == ["TS1"]
    # The console script exits 0 after a run (it exited 1, printing the results dict, when it
    # returned main's dict as the status).
    from training.evaluate import cli

    assert cli(["--checkpoint", str(ckpt), "--dataset", "mpi3d-test", "--data-root", str(root),
                "--device", "cpu", "--limit", "1"]) == 0


def test_cli_scores_model_onnx_as_it_scores_model_pt(tmp_path, tiny_model):
    exported = export(tiny_model, tmp_path / "repo", "tiny", onnx=True)
    source = _source(1, subject=1, sequence=1, activity=3)
    runs = {}
    for path in (exported.model_path, exported.onnx_path):
        args, _ = _cli(tmp_path, ["--torchscript", str(path)], "mpi3d-test", [])
        runs[path.suffix] = main(args, open_source=_factory([], source))
    onnx, script = runs[".onnx"]["overall"], runs[".pt"]["overall"]
    # Two float32 runtimes of one model: errors agree closely; a joint that close to a PCK/AUC
    # threshold may flip, one of the 17 at most (as TorchScript against eager above).
    for key in ("mpjpe", "pa_mpjpe"):
        assert onnx[key] == pytest.approx(script[key], rel=1e-3), key
    for key in ("pck", "auc", "pa_pck", "pa_auc"):
        assert abs(onnx[key] - script[key]) <= 1 / 17 + 1e-9, key
