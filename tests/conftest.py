import os
from pathlib import Path

import pytest
import torch

from posecontract.layout import model_outputs
from tests.cpu_dispatch import DISPATCH_VARIABLES, numpy_simd, onednn_isa
from training.export import calibrate_batchnorm, export
from training.model import ModelConfig, build_model


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the CPU kernels this run dispatches to: float32 results differ between them."""
    settings = [f"{k}={os.environ[k]}" for k in DISPATCH_VARIABLES if k in os.environ]
    return [f"cpu dispatch: aten {torch.backends.cpu.get_cpu_capability()}, "
            f"onednn {onednn_isa()}, numpy {numpy_simd()}; "
            f"{' '.join(settings) or 'no dispatch variables set'}"]


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Seed torch and keep it to the machine's two cores for every test."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


MODEL_NAME = "tiny-pose"
# The fixture model has a visibility head, as the default model does: six outputs.
FIXTURE_OUTPUTS = model_outputs(True)


def set_visibility_head(model, bias: torch.Tensor | float, seed: int = 0) -> None:
    """Give an untrained visibility head small random weights and per-joint `bias` (logits):
    +4 makes every joint seen (visibility ~0.98), -4 unseen, whatever the image."""
    g = torch.Generator().manual_seed(seed)
    head = model.visibility
    with torch.no_grad():
        head.local.copy_(0.05 * torch.randn(head.local.shape, generator=g))
        head.context.copy_(0.05 * torch.randn(head.context.shape, generator=g))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype).expand_as(head.bias))


def fixture_model(visibility_bias: torch.Tensor | float | None = 4.0):
    """The small untrained model of the fixtures (None: without a visibility head)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_stages=1, feat_channels=16, mid_channels=32,
                                    name=MODEL_NAME, visibility=visibility_bias is not None),
                        pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)
    if visibility_bias is not None:
        set_visibility_head(model, visibility_bias)
    return model


def _exported_fixture_model(repo: Path, weights: str = "float32", onnx: bool = False) -> Path:
    export(fixture_model(), repo, MODEL_NAME, card_extra={"source": "test fixture, untrained"},
           weights=weights, onnx=onnx)
    return repo


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory) -> Path:
    """A Triton-layout repository with a small, randomly initialised MargiPose export.

    Version 1 holds model.pt and model.onnx, for every runtime of the local backend.
    """
    return _exported_fixture_model(tmp_path_factory.mktemp("model_repository"), onnx=True)


@pytest.fixture(scope="session")
def float16_repository(tmp_path_factory) -> Path:
    """The same model exported with float16 weight storage (`export --weights float16`)."""
    return _exported_fixture_model(tmp_path_factory.mktemp("float16_repository"), "float16")
