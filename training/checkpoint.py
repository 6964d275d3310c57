"""Checkpoints: the model config travels with the weights, so a checkpoint rebuilds its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.model import MargiPose, ModelConfig, build_model


def save_checkpoint(path: str | Path, model: MargiPose, **extra: Any) -> None:
    """Write {model_config, state_dict, **extra} (extra: optimiser, step, args, ...)."""
    payload = {"model_config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path) -> tuple[MargiPose, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model, payload)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "model_config" not in payload or "state_dict" not in payload:
        raise ValueError(
            f"{path} is not a MargiPose checkpoint (it needs model_config and state_dict)"
        )
    model = build_model(ModelConfig.from_dict(payload["model_config"]), pretrained=False)
    model.load_state_dict(payload["state_dict"])
    return model, payload
