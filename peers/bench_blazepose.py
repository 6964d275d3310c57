"""CPU throughput of BlazePose lite/full/heavy on 256x256 person crops, one and two processes.

    .venv-mediapipe/bin/python -m peers.bench_blazepose --seconds 10 \
        --json peers/results/blazepose_cpu.json

Runs inside the MediaPipe venv (see `peers/install_blazepose.sh`). The crops are cut from the
committed photos in data/photos around hand-picked people (`PERSON_CROPS`, squares that every
complexity finds a person in), resized to 256x256 and held in memory, so that decoding is not
timed. Each worker process builds its own estimator (static_image_mode=True: the detector and
the landmark model run on every image, as for independent crops), runs every crop once to warm
up, waits at a barrier for its peers, then cycles through the crops for `--seconds`. Throughput
is the sum over processes of images / seconds: with two processes, the figure to compare with
"two processes on 256x256 crops: full 77 images/s, heavy 35 images/s". The load average before
and after is recorded because other work on a shared machine lowers the numbers; CPU ms/image
barely moves with it. To give the benchmark the cores on a shared machine, run it in a session
of its own whose scheduler autogroup has priority (`nice` alone does not reach across the
sessions' autogroups; root only):

    setsid bash -c 'echo -15 > /proc/self/autogroup
                    exec .venv-mediapipe/bin/python -m peers.bench_blazepose --json out.json'
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import base_info
from peers.blazepose import MODELS, make_pose

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "data" / "photos"

# (photo, (x0, y0, side)): square boxes around one person each, in the photo's pixels.
PERSON_CROPS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sports2d_frame000.jpg", (410, 27, 480)),   # man standing on the box
    ("sports2d_frame075.jpg", (391, 33, 480)),   # same man
    ("sports2d_frame075.jpg", (1018, 478, 500)),  # woman walking
    ("sports2d_frame150.jpg", (253, 466, 500)),  # woman walking, other side
    ("astronaut.jpg", (0, 0, 512)),              # waist up, frontal
    ("camera.png", (0, 0, 512)),                 # man at a tripod, 3/4 body
    ("grace_hopper.jpg", (0, 0, 512)),           # head and shoulders
)


def load_crops(size: int = 256) -> list[np.ndarray]:
    """The `PERSON_CROPS` as (size, size, 3) uint8 RGB arrays."""
    crops = []
    for name, (x0, y0, side) in PERSON_CROPS:
        with Image.open(PHOTOS / name) as image:
            crop = image.convert("RGB").crop((x0, y0, x0 + side, y0 + side))
        crops.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)))
    return crops


def machine_info() -> dict[str, Any]:
    """Date, CPU, cores, load and the versions that matter."""
    import mediapipe

    return {
        **base_info(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "mediapipe": mediapipe.__version__,
        "numpy": np.__version__,
        "autogroup": _read("/proc/self/autogroup"),  # e.g. "/autogroup-95 nice -15"
    }


def _read(path: str) -> str | None:
    """A small text file's stripped contents, or None where it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _worker(complexity: int, crops: list[np.ndarray], seconds: float, barrier: Any,
            results: Any) -> None:
    """Warm up, wait for the peers, then run crops for `seconds`; put the counts on `results`."""
    pose = make_pose(complexity)
    for crop in crops:
        pose.process(crop)
    barrier.wait()
    latencies, found = [], 0
    cpu0, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        result = pose.process(crops[len(latencies) % len(crops)])
        latencies.append(time.perf_counter() - t)
        found += result.pose_landmarks is not None
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    pose.close()
    results.put({"images": len(latencies), "found": found, "seconds": elapsed,
                 "cpu_seconds": cpu, "median_ms": 1000 * statistics.median(latencies)})


def run(complexity: int, processes: int, crops: list[np.ndarray], seconds: float
        ) -> dict[str, Any]:
    """Throughput of `processes` concurrent workers at one complexity."""
    ctx = mp.get_context("spawn")  # fresh interpreters: no MediaPipe state crosses a fork
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(complexity, crops, seconds, barrier, results))
               for _ in range(processes)]
    for w in workers:
        w.start()
    per_process = [results.get(timeout=seconds + 300) for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise RuntimeError(f"benchmark worker exited with {w.exitcode}")
    images = sum(p["images"] for p in per_process)
    return {
        "complexity": complexity,
        "model": MODELS[complexity],
        "processes": processes,
        "images_per_s": sum(p["images"] / p["seconds"] for p in per_process),
        "found_fraction": sum(p["found"] for p in per_process) / images,
        "cpu_ms_per_image": 1000 * sum(p["cpu_seconds"] for p in per_process) / images,
        "per_process": per_process,
    }


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--complexities", type=int, nargs="+", default=sorted(MODELS),
                   choices=sorted(MODELS), help="0 lite, 1 full, 2 heavy (default all)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                   help="process counts to run (default 1 and 2)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per run")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--json", type=Path, help="write the results here")
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run every complexity x process count, print a markdown table, optionally write JSON."""
    if any(n < 1 for n in args.processes):
        raise SystemExit(f"--processes must be positive, got {args.processes}")
    crops = load_crops(args.size)
    payload: dict[str, Any] = {
        "machine": machine_info(),
        "load_average_before": os.getloadavg(),
        "settings": {"seconds": args.seconds, "size": args.size, "crops": len(crops),
                     "static_image_mode": True},
        "runs": [run(c, n, crops, args.seconds)
                 for c in args.complexities for n in args.processes],
    }
    payload["load_average_after"] = os.getloadavg()
    m = payload["machine"]
    print(f"{m['date_utc']}, {m['cpu']}, {m['cores']} cores, mediapipe {m['mediapipe']}, "
          f"load {payload['load_average_before'][0]:.1f} -> {payload['load_average_after'][0]:.1f}")
    # CPU ms/image is what the process itself burnt per image: unlike wall time it barely
    # moves when other work shares the cores, so it tells contention from a slow model.
    print("| model | processes | images/s | median ms/image | CPU ms/image | CPU util/process |")
    print("| :-- | --: | --: | --: | --: | --: |")
    for r in payload["runs"]:
        ms = statistics.median(p["median_ms"] for p in r["per_process"])
        util = statistics.mean(p["cpu_seconds"] / p["seconds"] for p in r["per_process"])
        print(f"| {r['model']} | {r['processes']} | {r['images_per_s']:.1f} | {ms:.1f} "
              f"| {r['cpu_ms_per_image']:.1f} | {util:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
