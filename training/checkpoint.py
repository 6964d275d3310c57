"""Checkpoints: the model config travels with the weights, so a checkpoint rebuilds its model."""

from __future__ import annotations

import dataclasses
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


def load_checkpoint(path: str | Path, add_visibility: bool = False
                    ) -> tuple[MargiPose, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model, payload).

    `add_visibility` gives a model saved without a visibility head a freshly initialised one
    (every other weight loads; only the head's may be missing)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "model_config" not in payload or "state_dict" not in payload:
        raise ValueError(
            f"{path} is not a MargiPose checkpoint (it needs model_config and state_dict)"
        )
    cfg = ModelConfig.from_dict(payload["model_config"])
    if add_visibility and not cfg.visibility:
        cfg = dataclasses.replace(cfg, visibility=True)
        model = build_model(cfg, pretrained=False)
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        strays = [k for k in missing if not k.startswith("visibility.")] + list(unexpected)
        if strays:
            raise ValueError(f"{path} does not fit the model with a visibility head: "
                             f"{strays[:5]} ...")
        return model, payload
    model = build_model(cfg, pretrained=False)
    state = dict(payload["state_dict"])
    if cfg.visibility and "visibility.temperature" not in state:
        # saved before the head had its calibration temperature: uncalibrated, T = 1
        state["visibility.temperature"] = torch.ones(())
    if cfg.visibility and "visibility.offset" not in state:
        # saved before the per-joint calibration offsets: none
        state["visibility.offset"] = torch.zeros(len(state["visibility.bias"]))
    model.load_state_dict(state)
    return model, payload
