"""The committed model_repository/: every config.pbtxt is the one the export contract renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from posecontract.layout import INPUT, OUTPUTS
from posecontract.triton import ServingOptions, render_config

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt"))


def test_the_default_model_has_a_production_config():
    assert REPOSITORY / "margipose-lite" / "config.pbtxt" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_committed_config_is_rendered_from_the_contract(config):
    name = config.parent.name
    # Not hand-edited: byte for byte what `margipose-export` writes for this model.
    assert config.read_text() == render_config(name, ServingOptions())
    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert parsed.name == name and parsed.platform == "pytorch_libtorch"
    assert [i.name for i in parsed.input] == [INPUT.name]
    assert [o.name for o in parsed.output] == [s.name for s in OUTPUTS]
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
