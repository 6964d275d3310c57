"""Tests for the trainer CLI on in-memory data: artefacts, bit-exact resume, DDP equivalence."""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from tests.training.data_fixtures import write_mpii
from tests.training.stick_figures import dataset_factory
from training.checkpoint import load_checkpoint
from training.model import VARIANTS, ModelConfig, variant_config
from training.train import (
    Distributed,
    _check_resume,
    _jsonable,
    distributed_from_env,
    get_args_parser,
    main,
    open_registered,
    rng_state,
    set_rng_state,
)

TINY = "tiny-train-test"


def _tiny_config() -> ModelConfig:
    """A two-stage margipose-lite with narrow heads: the CLI's variant in these tests."""
    cfg = variant_config("margipose-lite", feat_channels=16, mid_channels=32, n_stages=2)
    return dataclasses.replace(cfg, name=TINY)


@pytest.fixture(autouse=True, scope="module")
def _tiny_variant():
    """Register the tiny variant (argparse choices come from VARIANTS)."""
    VARIANTS[TINY] = _tiny_config
    yield
    del VARIANTS[TINY]


def _argv(out: Path, *extra: str) -> list[str]:
    return ["--variant", TINY, "--data-root", str(out.parent), "--train", "figures-3d",
            "figures-2d", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
            "--workers", "0", "--no-pretrained", "--log-every", "1", "--seed", "3",
            "--out", str(out), *extra]


def _run(argv: list[str], factory=dataset_factory) -> dict:
    return main(get_args_parser().parse_args(argv), factory, env={})


def _metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from a run's metrics.csv."""
    out: dict[str, dict[int, float]] = {}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], {})[int(row["step"])] = float(row["value"])
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict]:
    """Two epochs of two steps with validation, in one go."""
    out = tmp_path_factory.mktemp("full") / "run"
    torch.manual_seed(0)
    return out, _run(_argv(out, "--val", "figures-val"))


def test_run_writes_metrics_pictures_and_a_checkpoint(full_run) -> None:
    out, result = full_run
    assert result["step"] == 4 and len(result["losses"]) == 4
    metrics = _metrics(out)
    assert sorted(metrics["train/loss"]) == [1, 2, 3, 4]
    assert list(metrics["train/loss"].values()) == pytest.approx(result["losses"])
    assert sorted(metrics["val/mpjpe_mm"]) == [2, 4] and sorted(metrics["val/loss"]) == [2, 4]
    assert metrics["train/lr"][1] == pytest.approx(0.1)  # 1-cycle: 0.1 lr_max at count 1
    pictures = sorted((out / "heatmaps").glob("*.png"))
    assert [p.name for p in pictures] == ["step_0000002.png", "step_0000004.png"]
    with Image.open(pictures[0]) as picture:
        assert picture.size == (4 * 256, 4 * 256)
    assert (out / "args.json").exists()
    model, payload = load_checkpoint(out / "last.pt")
    assert model.cfg == _tiny_config()
    assert (payload["step"], payload["epoch"]) == (4, 2)
    assert payload["schedule"] == {"total_steps": 4, "lr_max": 1.0}
    assert payload["sampler"]["start"] == 4 and payload["args"]["train"] == ["figures-3d",
                                                                             "figures-2d"]
    assert {"python", "numpy", "torch"} <= set(payload["rng"])


class Preempted(Exception):
    """Stands in for the job being killed."""


def _preempting_factory(run_dir: Path):
    """A dataset factory whose sources fail once the run has written its first checkpoint."""

    class Source:
        def __init__(self, inner):
            self.inner, self.name, self.has_depth = inner, inner.name, inner.has_depth

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, index: int):
            if (run_dir / "last.pt").exists():
                raise Preempted
            return self.inner[index]

    return lambda spec, root: Source(dataset_factory(spec, root))


def test_resume_continues_bit_exactly(full_run, tmp_path: Path) -> None:
    reference, _ = full_run
    out = tmp_path / "run"
    argv = _argv(out, "--val", "figures-val")
    with pytest.raises(Preempted):
        _run(argv, _preempting_factory(out))  # stops during epoch 2, after checkpoint 1
    stopped = torch.load(out / "last.pt", weights_only=True)
    assert (stopped["step"], stopped["epoch"]) == (2, 1)
    # Whatever ran in between, the global RNGs come back from the checkpoint.
    torch.manual_seed(999), np.random.seed(999), random.seed(999)
    result = _run([*argv, "--resume", str(out / "last.pt")])
    assert result["step"] == 4 and len(result["losses"]) == 2
    a = torch.load(reference / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    # Bit-exact on one machine: both runs execute the same float32 kernels in the same order.
    # A run resumed on another CPU (other AVX-512/AVX2 kernels, another thread count) continues
    # correctly but not bit for bit.
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for i, state in a["optimiser"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimiser"]["state"][i]["momentum_buffer"])
    # The resumed run appended its steps to the same metrics file.
    assert _metrics(out)["train/loss"] == pytest.approx(_metrics(reference)["train/loss"])


def test_resume_refuses_a_different_run(full_run, tmp_path: Path) -> None:
    reference, _ = full_run
    argv = _argv(tmp_path / "run", "--lr-max", "0.5", "--resume", str(reference / "last.pt"))
    with pytest.raises(ValueError, match=r"lr_max: checkpoint 1.0 vs now 0.5"):
        _run(argv)


def test_init_starts_a_new_run_from_a_checkpoints_weights(full_run, tmp_path: Path) -> None:
    reference, _ = full_run
    start = torch.load(reference / "last.pt", weights_only=True)["state_dict"]
    # A learning rate too small to move a weight: the run ends where --init put it.
    result = _run(_argv(tmp_path / "run", "--init", str(reference / "last.pt"),
                        "--lr-max", "1e-30"))
    assert result["step"] == 4  # a new run: its own schedule from step 0
    ended = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ended["args"]["init"] == str(reference / "last.pt")
    convs = [k for k in start if k.endswith(".weight") and start[k].ndim == 4]
    assert convs and all(torch.equal(start[k], ended["state_dict"][k]) for k in convs)
    scratch = _run(_argv(tmp_path / "scratch", "--lr-max", "1e-30"))
    assert scratch["step"] == 4
    fresh = torch.load(tmp_path / "scratch" / "last.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(start[k], fresh[k]) for k in convs)
    with pytest.raises(ValueError, match="not the --variant and ablations asked for"):
        _run(_argv(tmp_path / "other", "--init", str(reference / "last.pt"), "--n-stages", "1"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--accum-steps", "3"], "--batch-size 2 must split"),
        (["--source-counts", "2"], "one count per --train set"),
        (["--source-counts", "2", "1"], "must add up to --batch-size 2"),
        (["--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--teacher-depth-weight", "1.5"], r"--teacher-depth-weight must be in \[0, 1\]"),
    ],
)
def test_impossible_arguments_are_refused(tmp_path: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(_argv(tmp_path / "run", *extra))


def test_parser_offers_the_variants_and_reference_defaults(tmp_path: Path) -> None:
    args = get_args_parser().parse_args(["--data-root", "d", "--train", "a", "--out", "o"])
    assert (args.epochs, args.steps_per_epoch, args.batch_size, args.lr_max) == (150, 1000, 32,
                                                                                 1.0)
    assert args.amp == "none" and args.variant == "margipose"
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--variant", "nope", "--data-root", "d", "--train", "a",
                                      "--out", "o"])


def test_teacher_depth_weight_flag(tmp_path: Path) -> None:
    base = ["--data-root", "d", "--train", "real2d3d-train", "--out", "o"]
    assert get_args_parser().parse_args(base).teacher_depth_weight == 0.5
    args = get_args_parser().parse_args([*base, "--teacher-depth-weight", "0.25"])
    assert args.teacher_depth_weight == 0.25
    saved = _jsonable(args)
    _check_resume(saved, args)
    # A checkpoint from before the flag resumes under any weight; one that has it must agree.
    _check_resume({k: v for k, v in saved.items() if k != "teacher_depth_weight"}, args)
    with pytest.raises(ValueError, match=r"teacher_depth_weight: checkpoint 0.5 vs now 0.25"):
        _check_resume({**saved, "teacher_depth_weight": 0.5}, args)


def test_the_default_factory_opens_registered_datasets(tmp_path: Path) -> None:
    truth = write_mpii(tmp_path)
    source = open_registered("mpii-train", tmp_path)
    assert source.name == "mpii-train" and len(source) == len(truth["mpii-train"])
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        open_registered("nope", tmp_path)


def test_distributed_from_env() -> None:
    assert distributed_from_env({}) == Distributed(0, 1, 0)
    job = distributed_from_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"})
    assert job == Distributed(5, 8, 1) and not job.is_main


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.save({"rng": state}, tmp_path / "rng.pt")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


# ----------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, argv: list[str]) -> None:
    """One torchrun-like rank: the environment torchrun would set, then the CLI's main."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # as the single process below: see the test
    VARIANTS[TINY] = _tiny_config
    main(get_args_parser().parse_args(argv), dataset_factory)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    # BatchNorm: SyncBatchNorm runs on GPUs only, so on CPU each rank normalises over its own
    # half of the global batch. The same computation in one process is gradient accumulation
    # over two chunks of that batch (--accum-steps 2), each chunk's loss weighted by its share
    # of the labelled joints; that is what the two ranks must match. The batch mixes 3D and 2D
    # examples with unlabelled joints, so the chunks have different weights.
    #
    # The two are equal in exact arithmetic; they differ in the order of summation (gradient
    # all-reduce and its mean over 2 ranks vs accumulation) and, in float32, in rounding that
    # depends on the CPU's kernels and thread count (~1e-7 relative), which this untrained tiny
    # model's nearly one-hot heatmaps amplify to ~1e-3 within two steps. So both sides train in
    # float64 (the default dtype: the model is built in it and the whole step follows), where
    # those differences stay near 1e-12, and one thread each.
    common = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "4", "--lr-max", "0.3",
              "--val", "figures-val"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    torch.set_num_threads(1)  # the conftest fixture sets it back for the next test
    torch.set_default_dtype(torch.float64)
    try:
        _run([*_argv(single), *common, "--accum-steps", "2"])
    finally:
        torch.set_default_dtype(torch.float32)
    mp.spawn(_ddp_rank, args=(2, _free_port(), [*_argv(ddp), *common]), nprocs=2, join=True)
    one, two = _metrics(single)["train/loss"], _metrics(ddp)["train/loss"]
    assert sorted(two) == [1, 2, 3]
    for step in (1, 2, 3):
        assert two[step] == pytest.approx(one[step], rel=1e-9)
    assert one[3] != one[1]  # the weights did move
    # Validation ran sharded over the two ranks and was summed back together.
    assert np.isfinite(_metrics(ddp)["val/mpjpe_mm"][3])
    a = torch.load(single / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(ddp / "last.pt", weights_only=True)["state_dict"]
    for key, value in a.items():
        if "running" not in key and "num_batches" not in key:  # parameters, not BN statistics
            assert value.dtype == b[key].dtype == torch.float64, key
            torch.testing.assert_close(b[key], value, rtol=1e-9, atol=1e-12, msg=key)


def test_trunk_body_lr_scale_is_checked() -> None:
    from training.model import build_model
    from training.train import parameter_groups

    model = build_model(_tiny_config(), pretrained=False)
    # Scale 1 (the default): one group with every parameter, as before the option existed.
    (group,) = parameter_groups(model)
    assert len(group["params"]) == len(list(model.parameters())) and "lr_scale" not in group
    with pytest.raises(ValueError, match="needs a BlazePose trunk .*'efficientnet-lite0' trunk"):
        parameter_groups(model, 0.1)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            parameter_groups(model, bad)


def test_freeze_keeps_the_stride8_trunk_and_its_statistics_fixed(tmp_path: Path) -> None:
    from training.model import build_model
    from training.train import seed_all

    out = tmp_path / "frozen"
    _run(_argv(out, "--freeze", "stride8", "--channels-last"))
    seed_all(3)  # the run's seed: the same initial weights
    initial = build_model(_tiny_config(), pretrained=False).state_dict()
    trained = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    frozen = [k for k in initial if k.startswith(("trunk.stem.", "trunk.to_stride8."))]
    assert any(k.endswith("running_mean") for k in frozen)
    for key in frozen:  # weights and BatchNorm statistics alike
        assert torch.equal(initial[key], trained[key]), key
    changed = [k for k in initial if k not in frozen and initial[k].is_floating_point()
               and not torch.equal(initial[k], trained[k])]
    assert any(k.startswith("trunk.to_stride16.") for k in changed)
    assert any(k.startswith(("first.", "refine.")) for k in changed)
    # --freeze defines the run: resuming without it is refused.
    with pytest.raises(ValueError, match="freeze: checkpoint 'stride8' vs now None"):
        _run([*_argv(tmp_path / "again"), "--resume", str(out / "last.pt")])
