"""Tests for the training and evaluation loops."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tests.training.stick_figures import source_2d, source_3d
from training.camera import crop_targets, ndc_to_camera
from training.data.mixed import collate
from training.data.transforms import make_example
from training.engine import (
    batch_mpjpe,
    evaluate,
    heatmap_figure,
    normalise_images,
    train_step,
    train_steps,
)
from training.losses import margipose_loss
from training.metrics import mpjpe, root_relative
from training.model import build_model, variant_config
from training.schedule import OneCycle
from training.skeleton import joint_index

DEVICE = torch.device("cpu")


def _tiny(n_stages: int = 2, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = variant_config("margipose-lite", feat_channels=16, mid_channels=32,
                         n_stages=n_stages, **overrides)
    return build_model(cfg, pretrained=False)


@pytest.fixture(scope="module")
def batch() -> dict:
    """A 3D and a 2D example (the 2D one has unlabelled joints). Small: CPU time is scarce."""
    return collate([make_example(source_3d(1)[0]), make_example(source_2d(1)[0])])


def _sgd(model: torch.nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_images_are_normalised_with_the_model_statistics() -> None:
    model = _tiny(1, input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225))
    black = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    # The reference's test: a black pixel's red channel normalises to -2.1179.
    assert float(normalise_images(black, model)[0, 0, 0, 0]) == pytest.approx(-2.1179, abs=1e-4)
    white = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    expected = (1 - torch.tensor(model.cfg.input_mean)) / torch.tensor(model.cfg.input_std)
    torch.testing.assert_close(normalise_images(white, model).flatten(), expected)


def test_step_loss_is_the_margipose_loss_over_every_stage(batch: dict) -> None:
    # eval mode: BatchNorm uses running stats, the same in both passes. float64: the step's
    # forward runs with autograd on, which may pick other convolution kernels (oneDNN's training
    # vs inference primitives) whose float32 rounding differs.
    model = _tiny(2).double().eval()
    with torch.no_grad():
        _, stages, _ = model(normalise_images(batch["image"], model))
        expected, parts = margipose_loss(stages, batch["target"], batch["has_depth"],
                                         batch["mask"])
        last_only, _ = margipose_loss(stages[-1:], batch["target"], batch["has_depth"],
                                      batch["mask"])
    result = train_step(model, batch, _sgd(model), DEVICE)
    assert result.loss == pytest.approx(float(expected), rel=1e-12)
    assert result.jsd + result.euclidean == pytest.approx(result.loss, rel=1e-12)
    assert result.loss > float(last_only) * 1.2  # both stages are supervised


def test_gradient_accumulation_equals_one_pass_over_the_batch(batch: dict) -> None:
    # The two examples have different numbers of labelled joints, so an unweighted mean of
    # the two chunk losses would differ from the masked mean over the batch.
    assert len(set(batch["mask"].sum(-1).tolist())) == 2
    # The two steps are equal in exact arithmetic (eval mode: BatchNorm uses its running
    # statistics, so the chunks see the same normalisation). In float32 they differ by the
    # order of summation of every gradient, ~1e-6 relative, by amounts that depend on the CPU's
    # kernels (AVX-512 vs AVX2 convolutions); in float64 the same differences are ~1e-15.
    one = _tiny(2).double().eval()
    two = copy.deepcopy(one)
    r1 = train_step(one, batch, _sgd(one), DEVICE, accum_steps=1)
    r2 = train_step(two, batch, _sgd(two), DEVICE, accum_steps=2)
    assert r1.coords.dtype == torch.float64  # the whole step ran in float64
    assert r2.loss == pytest.approx(r1.loss, rel=1e-12)
    for (name, a), b in zip(one.named_parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    moved = max(float((a.detach() - b.detach().double()).abs().max())
                for a, b in zip(one.parameters(), _tiny(2).parameters(), strict=True))
    assert moved > 1e-3  # the step did change the weights, by far more than the tolerance
    with pytest.raises(ValueError, match="does not split into 3"):
        train_step(one, batch, _sgd(one), DEVICE, accum_steps=3)


def test_bfloat16_autocast_trains_close_to_float32(batch: dict) -> None:
    one = {key: value[:1] for key, value in batch.items()}  # bf16 convolutions are slow on CPUs
    full = _tiny(1).eval()
    half = copy.deepcopy(full)
    r32 = train_step(full, one, _sgd(full), DEVICE)
    r16 = train_step(half, one, _sgd(half), DEVICE, amp=torch.bfloat16)
    assert np.isfinite(r16.loss)
    assert r16.loss == pytest.approx(r32.loss, rel=0.05)
    assert r16.coords.dtype == torch.float32  # soft-argmax stays in float32


class ListLogger:
    """A MetricLogger that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.rows.append((step, scalars))


def test_train_steps_follow_the_schedule_and_log(batch: dict) -> None:
    model = _tiny(1)
    opt = _sgd(model)
    schedule = OneCycle(total_steps=20, lr_max=0.5)
    logger = ListLogger()
    losses = train_steps(model, [batch] * 3, opt, schedule, DEVICE, first_step=5,
                         logger=logger, log_every=2)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert [step for step, _ in logger.rows] == [6, 8]  # counts 6..8, every second one
    for step, scalars in logger.rows:
        assert (scalars["train/lr"], scalars["train/momentum"]) == pytest.approx(schedule(step))
        assert scalars["train/mpjpe_mm"] > 0 and scalars["train/images_per_s"] > 0
    assert opt.param_groups[0]["lr"] == pytest.approx(schedule(8)[0])
    assert model.training


def test_batch_mpjpe_is_zero_for_the_truth_and_skips_2d(batch: dict) -> None:
    errors = batch_mpjpe(batch["target"], batch)
    assert errors.shape == (1,)  # the 3D example only
    np.testing.assert_allclose(errors, 0.0, atol=1e-2)
    # Moving one joint by a known amount in camera space changes the MPJPE by that / 17.
    i = 0
    crop, z_ref = batch["crops"][i], float(batch["z_ref"][i])
    camera = ndc_to_camera(batch["target"][i].double().numpy(), crop, z_ref)
    camera[joint_index("left_wrist")] += np.array([0.0, 170.0, 0.0])
    _, moved, _ = crop_targets(camera, crop)
    coords = batch["target"].clone()
    coords[i] = torch.from_numpy(moved).float()
    assert batch_mpjpe(coords, batch)[0] == pytest.approx(10.0, abs=0.02)


def test_evaluate_matches_a_direct_computation(batch: dict) -> None:
    model = _tiny(2)
    model.train()
    totals = evaluate(model, [batch, batch], DEVICE)
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        coords, stages, _ = model(normalise_images(batch["image"], model))
        loss, _ = margipose_loss(stages, batch["target"], batch["has_depth"], batch["mask"])
    errors = []
    for i in (0,):  # the 3D example
        pred = ndc_to_camera(coords[i].double().numpy(), batch["crops"][i],
                             float(batch["z_ref"][i]))
        errors.append(mpjpe(root_relative(pred), root_relative(batch["joints"][i].numpy())))
    means = totals.means()
    assert totals.samples_3d == 2 and totals.pairs == 2 * float(batch["mask"].sum())
    assert means["val/loss"] == pytest.approx(float(loss), rel=1e-5)
    assert means["val/mpjpe_mm"] == pytest.approx(float(np.mean(errors)), rel=1e-5)


def test_no_jsd_models_train_on_the_euclidean_term_only(batch: dict) -> None:
    model = _tiny(1, use_jsd=False).eval()
    result = train_step(model, batch, _sgd(model), DEVICE)
    assert result.jsd == 0.0 and result.loss == pytest.approx(result.euclidean)


def test_heatmap_figure_shows_the_maps() -> None:
    n = 32
    maps = [torch.full((17, n, n), 1e-6) for _ in range(3)]
    j = joint_index("right_wrist")
    maps[0][j, 5, 20] = 1.0  # xy peak at row 5, column 20
    image = torch.zeros(3, 256, 256, dtype=torch.uint8)
    coords = torch.zeros(17, 3)
    figure = heatmap_figure(image, maps, coords, joints=("head_top", "right_wrist"))
    assert figure.size == (4 * 256, 2 * 256)
    pixels = np.asarray(figure)
    xy_panel = pixels[256:512, 256:512].astype(int).sum(-1)
    rows, cols = np.nonzero(xy_panel == xy_panel.max())
    assert (rows.min() // 8, cols.min() // 8) == (5, 20)  # each cell is 8 x 8 pixels


def test_tiny_model_helper_builds_what_it_says() -> None:
    model = _tiny(3)
    assert dataclasses.asdict(model.cfg)["n_stages"] == 3 and len(model.refine) == 2


def _as_teacher(batch: dict, z: float = 0.3) -> dict:
    """The batch with its 2D example (index 1) marked teacher depth, with depth targets z."""
    target = batch["target"].clone()
    target[1, :, 2] = z
    return {**batch, "target": target, "teacher_depth": torch.tensor([False, True])}


def test_teacher_depth_weight_zero_trains_teacher_samples_as_2d_ones(batch: dict) -> None:
    # float64 model in eval mode: the comparison is bit for bit.
    plain = _tiny(1).double().eval()
    zero, half = copy.deepcopy(plain), copy.deepcopy(plain)
    r_plain = train_step(plain, batch, _sgd(plain), DEVICE, teacher_depth_weight=0.5)
    r_zero = train_step(zero, _as_teacher(batch), _sgd(zero), DEVICE, teacher_depth_weight=0.0)
    r_half = train_step(half, _as_teacher(batch), _sgd(half), DEVICE, teacher_depth_weight=0.5)
    assert r_zero.loss == r_plain.loss
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), zero.parameters(),
                                                 strict=True))
    assert r_half.loss > r_plain.loss  # the teacher's depth now counts


def test_evaluate_weighs_teacher_depth_as_training_does(batch: dict) -> None:
    model = _tiny(1).double().eval()
    teacher = _as_teacher(batch)
    with torch.no_grad():
        _, stages, _ = model(normalise_images(batch["image"], model))
        weights = torch.tensor([1.0, 0.25], dtype=torch.float64)
        loss, _ = margipose_loss(stages, teacher["target"], weights, batch["mask"])
    totals = evaluate(model, [teacher], DEVICE, teacher_depth_weight=0.25)
    assert totals.samples_3d == 1  # MPJPE stays a ground-truth measure
    assert totals.means()["val/loss"] == pytest.approx(float(loss), rel=1e-12)
