"""Fixtures shared by the training tests."""

import pytest
import torch

from tests.training.test_export import _tiny_model
from training.export import export


@pytest.fixture(scope="session")
def tiny_onnx_exports(tmp_path_factory):
    """One small untrained model exported twice with model.onnx: float32 (version 1) and
    float16 weight storage (version 2)."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = _tiny_model()
    return (export(model, root, "tiny", version=1, onnx=True),
            export(model, root, "tiny", version=2, onnx=True, weights="float16"))
