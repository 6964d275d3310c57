"""The backend protocol: run a batch of uint8 crops through the exported model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """What the backend serves: name, version and the model card (if it carries one)."""

    name: str
    version: str
    card: dict = field(default_factory=dict)


class Backend(Protocol):
    """An inference backend. `infer` must not block the event loop."""

    kind: str

    async def start(self) -> None:
        """Load the model and warm it up; raise BackendUnavailable if it cannot."""

    async def stop(self) -> None:
        """Release resources."""

    async def ready(self) -> bool:
        """True when `infer` can be called now."""

    def info(self) -> ModelInfo:
        """The model being served (valid after `start`)."""

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, 3, 256, 256) -> outputs keyed by `posecontract.layout` keys, leading dim N."""
