"""What re-framing a partly seen person costs per request, through the serving core.

    python -m bench.reframe_cost --iters 30 --json bench/results/reframe_cost.json

Two `PoseService`s over the same embedded backend settings (margipose-lite, ONNX Runtime, one
process), one with `reframe_partial` on (the default) and one with it off, answer the same
requests in alternation (the order flipping each iteration, so the slow spells of a shared
machine hit both alike):

- `portrait`: the head-and-shoulders photo (data/photos/grace_hopper.jpg) with a box around her,
  which the rule re-frames (one more model pass);
- `whole`: the Sports2D frame with a box around each of the two whole people, which it does not.

Reported per case and setting: the median and p90 of the request's `timings_ms["total"]` (decode
to response, inside the core) and of the model passes' own time.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from bench.report import (
    core_bench_parser,
    describe_machine,
    machine_info,
    markdown_table,
    median_and_p90,
    write_json,
)
from service.backends import make_backend
from service.core import PoseService
from service.options import Box, PredictOptions
from service.settings import Settings

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
CASES = {
    "portrait": (PHOTOS / "grace_hopper.jpg", [Box(x=40, y=10, w=430, h=590)]),
    "whole": (PHOTOS / "sports2d_frame075.jpg",
              [Box(x=391, y=33, w=480, h=480), Box(x=1018, y=478, w=500, h=500)]),
}
MODEL_KEYS = ("model", "model_reframe")


async def measure(repository: Path, iters: int, warmup: int) -> dict[str, Any]:
    services = {}
    for setting in ("on", "off"):
        settings = Settings(model_repository=repository, runtime="onnxruntime",
                            reframe_partial=setting == "on", max_batch_wait_ms=0)
        services[setting] = PoseService(settings, make_backend(settings))
        await services[setting].start()
    stats: dict[str, dict[str, dict[str, list]]] = {
        c: {s: {"total": [], "model": [], "reframed": []} for s in services} for c in CASES}
    try:
        for i in range(warmup + iters):
            for case, (photo, boxes) in CASES.items():
                data = photo.read_bytes()
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for setting in order:
                    result = await services[setting].predict(data, "image/jpeg",
                                                             PredictOptions(boxes=boxes))
                    if i >= warmup:
                        t = result.timings_ms
                        stats[case][setting]["total"].append(t["total"])
                        stats[case][setting]["model"].append(sum(t.get(k, 0.0)
                                                                 for k in MODEL_KEYS))
                        stats[case][setting]["reframed"].append("model_reframe" in t)
    finally:
        for service in services.values():
            await service.stop()
    return stats


def get_args_parser() -> argparse.ArgumentParser:
    return core_bench_parser(__doc__, iters=30, warmup=3)


def main(args: argparse.Namespace) -> dict[str, Any]:
    stats = asyncio.run(measure(args.repository, args.iters, args.warmup))
    rows, summary = [], {}
    for case, by_setting in stats.items():
        for setting, series in by_setting.items():
            total, total90 = median_and_p90(series["total"])
            model, _ = median_and_p90(series["model"])
            summary[f"{case}/{setting}"] = {"total_ms_median": total, "total_ms_p90": total90,
                                            "model_ms_median": model,
                                            "reframed": all(series["reframed"])}
            rows.append([case, setting, f"{total:.1f}", f"{total90:.1f}", f"{model:.1f}"])
    info = machine_info()
    print(describe_machine(info))
    print(markdown_table(["case", "re-framing", "total ms median", "total ms p90",
                          "model ms median"], rows, text_columns=2))
    payload = {"machine": info, "iters": args.iters, "results": summary, "raw": stats}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
