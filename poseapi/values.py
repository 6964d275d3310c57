"""Small values of the API that server and clients both hold: a person box, the model that
answered, the served model's description."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A joint whose `visibility` is at least this counts as seen: the service's root-depth priors and
# auto crop, the renderer and the client's `Joint.seen` all use it.
SEEN_VISIBILITY = 0.5


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


@dataclass(frozen=True)
class ModelDescription:
    """The served model: name, version, backend, input size, skeleton and model card
    (`/v1/model` and `GetModel`)."""

    name: str
    version: str
    backend: str
    input_size: int
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    card: dict[str, Any] = field(default_factory=dict)
    detector: ModelInfo | None = None
    """The person detector for requests without boxes; None when the server has none."""

    def to_json(self) -> dict[str, Any]:
        """The REST API's GET /v1/model body."""
        d = self.detector
        return {"name": self.name, "version": self.version, "backend": self.backend,
                "input_size": self.input_size, "joints": list(self.joints),
                "parents": list(self.parents), "card": self.card,
                "detector": None if d is None else
                {"name": d.name, "version": d.version, "backend": d.backend}}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelDescription:
        d = body.get("detector")  # servers before the detector do not send it
        return cls(body["name"], body["version"], body["backend"], int(body["input_size"]),
                   tuple(body["joints"]), tuple(int(p) for p in body["parents"]),
                   dict(body["card"]),
                   None if d is None else ModelInfo(d["name"], d["version"], d["backend"]))
