"""The exported model's input/output contract (TorchScript and Triton alike).

The TorchScript module's `forward(image)` takes one tensor and returns a tuple of outputs in
the order of `OUTPUTS`. Triton's libtorch backend names tensors by position, hence
`INPUT__0` and `OUTPUT__k`. The exporter writes `config.pbtxt` from these tables and the
service reads the same tables, so the two cannot drift apart.

Every model has the five `OUTPUTS`. A model with a visibility head (margipose-lite version 4
on) has a sixth, `VISIBILITY`: the outputs a model has are `model_outputs(visibility)`, and a
reader learns which from the model itself (`outputs_named` on its output names), so models
with and without it are served side by side.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from posecontract.skeleton import NUM_JOINTS

INPUT_SIZE = 256      # model input is INPUT_SIZE x INPUT_SIZE RGB
HEATMAP_SIZE = 32     # every marginal heatmap is HEATMAP_SIZE x HEATMAP_SIZE


@dataclass(frozen=True)
class TensorSpec:
    name: str               # Triton tensor name (positional TorchScript convention)
    key: str                # what the tensor is, for code and docs
    dtype: str              # Triton data type
    dims: tuple[int, ...]   # per-item shape (the batch dimension is implicit)
    doc: str


INPUT = TensorSpec(
    "INPUT__0", "image", "TYPE_UINT8", (3, INPUT_SIZE, INPUT_SIZE),
    "RGB crop, uint8 0..255, NCHW; the model owns normalisation.",
)

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        "OUTPUT__0", "coords", "TYPE_FP32", (NUM_JOINTS, 3),
        "Normalised (x, y, z) per joint in (-1, 1): x, y from the xy map (crop edges at +-1), "
        "z = mean of the zy and xz estimates (perspective depth, root at 0, farther is +z).",
    ),
    TensorSpec(
        "OUTPUT__1", "coord_std", "TYPE_FP32", (NUM_JOINTS, 3),
        "Standard deviation of each coordinate under the marginal heatmaps, in normalised "
        "units: x, y from the xy map, z the mean of the zy and xz standard deviations.",
    ),
    TensorSpec(
        "OUTPUT__2", "heatmap_xy", "TYPE_FP32", (NUM_JOINTS, HEATMAP_SIZE, HEATMAP_SIZE),
        "Final-stage xy marginal (softmaxed, sums to 1): rows = y, columns = x.",
    ),
    TensorSpec(
        "OUTPUT__3", "heatmap_zy", "TYPE_FP32", (NUM_JOINTS, HEATMAP_SIZE, HEATMAP_SIZE),
        "Final-stage zy marginal: rows = y, columns = z.",
    ),
    TensorSpec(
        "OUTPUT__4", "heatmap_xz", "TYPE_FP32", (NUM_JOINTS, HEATMAP_SIZE, HEATMAP_SIZE),
        "Final-stage xz marginal: rows = z, columns = x.",
    ),
)

VISIBILITY = TensorSpec(
    "OUTPUT__5", "visibility", "TYPE_FP32", (NUM_JOINTS,),
    "Probability that each joint is in view: inside the picture and not hidden behind an "
    "occluder (self-occlusion counts as in view). Only models with a visibility head.",
)
OPTIONAL_OUTPUTS: tuple[TensorSpec, ...] = (VISIBILITY,)

OUTPUT_BY_KEY = {spec.key: spec for spec in OUTPUTS + OPTIONAL_OUTPUTS}


def model_outputs(visibility: bool) -> tuple[TensorSpec, ...]:
    """The outputs of a model with (True) or without a visibility head, in order."""
    return OUTPUTS + ((VISIBILITY,) if visibility else ())


def outputs_named(names: Iterable[str]) -> tuple[TensorSpec, ...]:
    """The contract outputs a model has, from its output tensor names (any order): the five
    `OUTPUTS` and any of `OPTIONAL_OUTPUTS`. Raises ValueError naming what is missing or unknown.
    """
    return POSE.named(names)


@dataclass(frozen=True)
class ModelContract:
    """One exported model's tensors: its input, the outputs it always has and those it may
    have. The pose model's is `POSE`; the person detector's is
    `posecontract.detection.DETECTOR_CONTRACT`. Runtimes and backends take one, so the same
    code serves both models."""

    name: str                                # what the model is, for messages
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    optional: tuple[TensorSpec, ...] = ()

    def named(self, names: Iterable[str]) -> tuple[TensorSpec, ...]:
        """The outputs a model has, from its output names (any order), in contract order.
        Raises ValueError naming what is missing or unknown."""
        names = list(names)
        known = {spec.name for spec in self.outputs + self.optional}
        missing = [spec.name for spec in self.outputs if spec.name not in names]
        unknown = [n for n in names if n not in known]
        if missing or unknown:
            raise ValueError(
                f"The {self.name} model's outputs {names} do not fit the contract: missing "
                f"{missing}, unknown {unknown} (expected {[s.name for s in self.outputs]}"
                + (f" and optionally {[s.name for s in self.optional]})" if self.optional
                   else ")"))
        return self.outputs + tuple(spec for spec in self.optional if spec.name in names)


POSE = ModelContract("pose", INPUT, OUTPUTS, OPTIONAL_OUTPUTS)
