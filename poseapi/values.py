"""Small values of the API that server and clients both hold: a person box, the model's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A person box in original-image pixels: top-left corner and size."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class ModelInfo:
    """The model that answered: served name, version, and the backend that ran it."""

    name: str
    version: str
    backend: str
