"""What the peer-comparison scripts share: BlazePose on each sample's box, and their CLI tail.

`peers.eval_blazepose`, `peers.compare_synthetic` and `peers.compare_real2d` all run BlazePose
on the samples of one of our datasets, cropped to the sample's reference box, and all take a
dataset, a data root, BlazePose complexities, a sample limit and a JSON path.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peers.blazepose_client import BlazePoseClient, BlazePosePrediction

NAMES = {0: "lite", 1: "full", 2: "heavy"}  # BlazePose's model_complexity -> its model's name


def sample_count(source, limit: int | None) -> int:
    return len(source) if limit is None else min(limit, len(source))


def blazepose_on_boxes(source, complexity: int, limit: int | None, suffix: str = ".png"
                       ) -> Iterator[tuple[Any, BlazePosePrediction]]:
    """(sample, BlazePose's prediction) for the first `limit` samples, each image given to
    BlazePose (at `complexity`, in its own venv) as a `suffix` file with the sample's box."""
    with tempfile.TemporaryDirectory() as tmp, BlazePoseClient(complexity) as blazepose:
        for i in range(sample_count(source, limit)):
            sample = source[i]
            path = Path(tmp) / f"{i}{suffix}"
            sample.image.save(path, **({"quality": 95} if suffix == ".jpg" else {}))
            (u, v), half = sample.box.centre, sample.box.side / 2
            yield sample, blazepose.predict(path, [u - half, v - half, u + half, v + half])


def dataset_parser(doc: str, dataset: str, *, torchscript: bool) -> argparse.ArgumentParser:
    """The shared options; `torchscript` adds the required --torchscript of our model."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    if torchscript:
        p.add_argument("--torchscript", type=Path, required=True,
                       help="exported model.pt, or model.onnx (run with ONNX Runtime)")
    p.add_argument("--dataset", default=dataset)
    p.add_argument("--data-root", type=Path, default=Path("build"))
    p.add_argument("--complexity", type=int, nargs="*", choices=sorted(NAMES), default=[1, 2],
                   help="BlazePose model complexities to run (none: only ours)")
    p.add_argument("--limit", type=int, help="only the first LIMIT samples")
    p.add_argument("--json", type=Path)
    return p


def load_ours(torchscript: Path) -> tuple[Any, str]:
    """An exported model.pt (or model.onnx) ready to call, and its label: the model card's name
    + " (ours)"."""
    from training.export import CARD_FILE
    from training.export_onnx import load_exported

    extra = {CARD_FILE: ""}
    module = load_exported(torchscript, "cpu", extra)
    name = json.loads(extra[CARD_FILE]).get("name") if extra[CARD_FILE] else None
    return module, f"{name or Path(torchscript).parent.parent.name} (ours)"


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")


def open_source(args: argparse.Namespace):
    """The dataset a comparison's flags name (`dataset_parser`)."""
    from training.data.registry import open_dataset  # training pulls in torch

    return open_dataset(args.dataset, args.data_root)


def write_rows(args: argparse.Namespace, rows: list[dict[str, Any]], **extra: Any) -> None:
    """A comparison's rows as JSON (`--json`), with the dataset and model they came from."""
    write_json(args.json, {"dataset": args.dataset, "torchscript": str(args.torchscript),
                           "rows": rows, **extra})
