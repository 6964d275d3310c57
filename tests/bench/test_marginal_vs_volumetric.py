import torch

from bench.marginal_vs_volumetric import VolumetricHead, gaussian_volumes, soft_argmax_3d
from training.model import ModelConfig


def test_soft_argmax_of_a_gaussian_volume_gives_back_its_centre():
    mu = torch.tensor([[[0.3, -0.5, 0.1], [-0.2, 0.05, -0.6]]])  # (B, J, 3) as (x, y, z)
    volume = gaussian_volumes(mu, 32, sigma=1.0)
    assert volume.shape == (1, 2, 32, 32, 32)
    assert torch.allclose(volume.sum(dim=(2, 3, 4)), torch.ones(1, 2))
    assert torch.allclose(soft_argmax_3d(volume), mu, atol=1e-4)


def test_volume_axes_are_z_y_x():
    volume = torch.zeros(1, 1, 4, 4, 4)
    volume[0, 0, 3, 0, 1] = 1.0  # z cell 3, y cell 0, x cell 1; centres (2j + 1) / 4 - 1
    assert soft_argmax_3d(volume).tolist() == [[[-0.25, -0.75, 0.75]]]


def test_volumetric_heads_output_normalised_cubes():
    cfg = ModelConfig(feat_channels=16, mid_channels=32, n_joints=3)
    features = torch.randn(2, 16, 32, 32)
    for depth in (32, 64):
        with torch.inference_mode():
            coords, (volume,) = VolumetricHead(cfg, depth).eval()(features)
        assert volume.shape == (2, 3, depth, depth, depth)
        assert torch.allclose(volume.sum(dim=(2, 3, 4)), torch.ones(2, 3), atol=1e-4)
        assert coords.shape == (2, 3, 3) and coords.abs().max() < 1
