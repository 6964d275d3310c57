"""Proof that the pipeline learns: a small model fits a handful of samples read from disk.

The samples are written in the real on-disk formats by `tests.training.data_fixtures`
(MPI-INF-3DHP train split: 6 frames; MPII train split: 4 people) and opened through
`training.data.registry.open_dataset`, so readers, crops, targets, mixed batches, the loss, SGD
with the 1-cycle schedule and the evaluation all take part.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.training.data_fixtures import write_mpi3dhp, write_mpii
from training.data.mixed import MixedDataset, RoundRobinBatchSampler, collate, evaluation_keys
from training.data.registry import open_dataset
from training.engine import evaluate, train_steps
from training.model import build_model, variant_config
from training.schedule import OneCycle

STEPS = 40
DEVICE = torch.device("cpu")


@pytest.mark.slow
def test_training_fits_a_handful_of_samples(tmp_path: Path) -> None:
    write_mpi3dhp(tmp_path)
    write_mpii(tmp_path)
    three_d, two_d = open_dataset("mpi3d-train", tmp_path), open_dataset("mpii-train", tmp_path)
    # No augmentation: the test asks whether the model can fit these exact crops.
    train = MixedDataset([three_d, two_d], seed=0, augment=False)
    sampler = RoundRobinBatchSampler([len(three_d), len(two_d)], [2, 2], seed=0)
    sampler.set_window(0, STEPS)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    # Training-set MPJPE over every 3D sample, unaugmented, model in eval mode.
    scored = DataLoader(MixedDataset([three_d], seed=0, augment=False), batch_size=len(three_d),
                        sampler=evaluation_keys(len(three_d)), collate_fn=collate)

    torch.manual_seed(0)
    model = build_model(variant_config("margipose-lite", feat_channels=16, mid_channels=32,
                                       n_stages=1), pretrained=False)
    before = evaluate(model, scored, DEVICE)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    losses = train_steps(model, loader, optimiser, OneCycle(STEPS, lr_max=0.3), DEVICE,
                         first_step=0)
    after = evaluate(model, scored, DEVICE)

    assert len(losses) == STEPS and before.samples_3d == after.samples_3d == len(three_d)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert after.means()["val/loss"] < before.means()["val/loss"]
    assert after.means()["val/mpjpe_mm"] < 0.5 * before.means()["val/mpjpe_mm"]
