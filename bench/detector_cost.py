"""What finding people costs per request without boxes, through the serving core.

    python -m bench.detector_cost --iters 20 --json bench/results/detector_cost.json

Three `PoseService`s over the same embedded settings (margipose-lite, ONNX Runtime, one process)
answer the same box-less requests in rotation (the order turning each iteration, so the slow
spells of a shared machine hit all alike):

- `tiles`: the person detector on the whole picture and its square tiles (the default);
- `whole`: the detector on the whole picture only (`detector_tiles` off);
- `no-detector`: the whole-image pass and a second pass around the skeleton found (the service
  before the detector; one person at most).

Pictures at the sizes users send: the Sports2D frame (1768 x 994) and that frame resized to
1280 x 720 and 640 x 360, the Pose2Sim portrait frame (1088 x 1920) and the Grace Hopper photo
(512 x 600), JPEG q90. Reported per picture and setting: persons answered, the median and p90 of
`timings_ms["total"]`, and the medians of detection (windows rendered + detector) and of the
pose passes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path
from typing import Any

from PIL import Image

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
from service.detector import make_detector
from service.options import PredictOptions
from service.settings import Settings

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
PICTURES = {
    "sports2d 1768x994": ("sports2d_frame075.jpg", None),
    "sports2d 1280x720": ("sports2d_frame075.jpg", (1280, 720)),
    "sports2d 640x360": ("sports2d_frame075.jpg", (640, 360)),
    "pose2sim 1088x1920": ("pose2sim/cam4_frame050.jpg", None),
    "portrait 512x600": ("grace_hopper.jpg", None),
}
SETTINGS = {"tiles": {}, "whole": {"detector_tiles": False}, "no-detector": {"detector_model": ""}}
DETECT_KEYS = ("crop_detect", "detect")
MODEL_KEYS = ("model", "model_pass1", "model_pass2", "model_reframe")


def picture(name: str, size: tuple[int, int] | None) -> bytes:
    image = Image.open(PHOTOS / name).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def measure(repository: Path, iters: int, warmup: int) -> dict[str, Any]:
    services = {}
    for name, extra in SETTINGS.items():
        settings = Settings(model_repository=repository, runtime="onnxruntime",
                            max_batch_wait_ms=0, **extra)
        services[name] = PoseService(settings, make_backend(settings),
                                     detector=make_detector(settings))
        await services[name].start()
    data = {case: picture(*spec) for case, spec in PICTURES.items()}
    stats: dict[str, dict[str, dict[str, list]]] = {
        c: {s: {"total": [], "detect": [], "model": [], "persons": []} for s in services}
        for c in PICTURES}
    names = list(services)
    try:
        for i in range(warmup + iters):
            order = names[i % len(names):] + names[:i % len(names)]
            for case, body in data.items():
                for setting in order:
                    result = await services[setting].predict(body, "image/jpeg",
                                                             PredictOptions())
                    if i < warmup:
                        continue
                    t, s = result.timings_ms, stats[case][setting]
                    s["total"].append(t["total"])
                    s["detect"].append(sum(t.get(k, 0.0) for k in DETECT_KEYS))
                    s["model"].append(sum(t.get(k, 0.0) for k in MODEL_KEYS))
                    s["persons"].append(len(result.persons))
    finally:
        for service in services.values():
            await service.stop()
    return stats


def get_args_parser() -> argparse.ArgumentParser:
    return core_bench_parser(__doc__, iters=20, warmup=2)


def main(args: argparse.Namespace) -> dict[str, Any]:
    stats = asyncio.run(measure(args.repository, args.iters, args.warmup))
    rows, summary = [], {}
    for case, by_setting in stats.items():
        for setting, series in by_setting.items():
            total, total90 = median_and_p90(series["total"])
            detect, _ = median_and_p90(series["detect"])
            model, _ = median_and_p90(series["model"])
            persons = sorted(set(series["persons"]))
            summary[f"{case}/{setting}"] = {"total_ms_median": total, "total_ms_p90": total90,
                                            "detect_ms_median": detect,
                                            "model_ms_median": model, "persons": persons}
            rows.append([case, setting, "/".join(map(str, persons)), f"{total:.1f}",
                         f"{total90:.1f}", f"{detect:.1f}", f"{model:.1f}"])
    info = machine_info()
    print(describe_machine(info))
    print(markdown_table(["picture", "finding people", "persons", "total ms median",
                          "total ms p90", "detection ms median", "pose passes ms median"],
                         rows, text_columns=3))
    payload = {"machine": info, "iters": args.iters, "results": summary, "raw": stats}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
