"""Raw-model speed on CPU: our exported models beside BlazePose full and heavy, in one run.

    python -m bench.vs_blazepose --threads 2 --batch-sizes 1 8 --warmup 3 --iters 20 \
        --torchscript default=model_repository/margipose-lite/1/model.pt \
        --torchscript bp-full=build/model_repository/margipose-blazepose-full/1/model.pt \
        --json bench/results/vs_blazepose.json

- ours: each `--torchscript NAME=PATH`, the exported artefact (uint8 (N, 3, 256, 256) in, every
  output out, as the embedded backend runs it), under torch.inference_mode; each `--onnx
  NAME=PATH` (a model.onnx, float32 or int8) with every runtime of `--onnx-runtimes` (ONNX
  Runtime, OpenVINO), loaded exactly as the embedded backend loads it
  (`service.backends.runtimes`);
- BlazePose full / heavy: the landmark networks (`pose_landmark_{full,heavy}.tflite`, the files
  `python -m training.blazepose fetch` pins) in the TFLite interpreter of ai-edge-litert with
  XNNPACK, MediaPipe's own CPU kernels, float32 NHWC 256x256 in;
- `--converted`: BlazePose full converted to torch (`training.tflite`), scripted and frozen, to
  separate what the kernels cost from what the network costs.

Only the networks run: no decoding, cropping, detector or tracking (BlazePose's pipeline adds its
detector on frames it does not track). The same thread count everywhere. Calls alternate between
the models, order flipping each iteration (`bench.model_cpu.time_alternating`), so a slow spell
of a shared machine falls on all alike: compare ratios within one run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.model_cpu import time_alternating
from bench.report import (
    add_common_args,
    apply_common_args,
    describe_machine,
    markdown_table,
    median_and_p90,
    write_json,
)
from posecontract.layout import INPUT
from training import blazepose


def tflite_runner(name: str, batch: int, threads: int, seed: int) -> Callable[[], object]:
    """One call of BlazePose `name` on a random batch, in the TFLite interpreter (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(blazepose.model_path(name)), num_threads=threads)
    index = it.get_input_details()[0]["index"]
    size = blazepose.MODELS[name].input_size
    if batch != 1:
        it.resize_tensor_input(index, [batch, size, size, 3])
    it.allocate_tensors()
    x = np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)

    def run() -> object:
        it.set_tensor(index, x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])
    return run


def torch_runner(module: Callable, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return module(x)
    return run


def onnx_runner(runtime, images: np.ndarray) -> Callable[[], object]:
    def run() -> object:
        return runtime.run(images)
    return run


def bench(torchscripts: dict[str, Path], batch_sizes: list[int], threads: int, warmup: int,
          iters: int, seed: int, converted: bool, onnx: dict[str, Path] | None = None,
          onnx_runtimes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    from posecontract.torchscript import load
    from service.backends.runtimes import open_runtime

    g = torch.Generator().manual_seed(seed)
    loaded = {name: load(path) for name, path in torchscripts.items()}
    sessions = {f"{name} ({runtime})": open_runtime(runtime, path, "cpu", threads)
                for name, path in (onnx or {}).items() for runtime in onnx_runtimes}
    conv = None
    if converted:
        conv = torch.jit.freeze(torch.jit.script(blazepose.load("full").eval()))
    rows = []
    for batch in batch_sizes:
        images = torch.randint(0, 256, (batch, *INPUT.dims), dtype=torch.uint8, generator=g)
        runners = {name: torch_runner(m, images) for name, m in loaded.items()}
        runners |= {name: onnx_runner(rt, images.numpy()) for name, rt in sessions.items()}
        for model in ("full", "heavy"):
            runners[f"blazepose-{model} (tflite)"] = tflite_runner(model, batch, threads, seed)
        if conv is not None:
            runners["blazepose-full (converted, torchscript)"] = torch_runner(
                conv, images.float() / 255)
        times = time_alternating(runners, warmup, iters)
        base = median_and_p90(times["blazepose-full (tflite)"])[0]
        for name, values in times.items():
            median, p90 = median_and_p90(values)
            rows.append({"model": name, "batch": batch, "median_ms": 1000 * median,
                         "p90_ms": 1000 * p90, "images_per_s": batch / median,
                         "vs_blazepose_full": base / median})
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torchscript", action="append", default=[], metavar="NAME=PATH",
                   help="an exported model.pt to time (repeatable)")
    p.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH",
                   help="an exported model.onnx (float32 or int8) to time with each runtime of "
                        "--onnx-runtimes (repeatable)")
    p.add_argument("--onnx-runtimes", nargs="+", default=["onnxruntime", "openvino"],
                   choices=["onnxruntime", "openvino"])
    p.add_argument("--converted", action="store_true",
                   help="also time BlazePose full converted to torch")
    add_common_args(p, warmup=3, warmup_help="untimed calls per model and batch size",
                    iters_help="timed calls per model and batch size")
    return p


def _named_files(items: list[str], flag: str) -> dict[str, Path]:
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"{flag} {item!r}: expected NAME=PATH of an existing file")
        named[name] = Path(path)
    return named


def main(args: argparse.Namespace) -> None:
    machine = apply_common_args(args)
    torchscripts, onnx = _named_files(args.torchscript, "--torchscript"), \
        _named_files(args.onnx, "--onnx")
    rows = bench(torchscripts, args.batch_sizes, torch.get_num_threads(), args.warmup,
                 args.iters, args.seed, args.converted, onnx, tuple(args.onnx_runtimes))
    print(f"# Raw models on CPU: {describe_machine(machine)}")
    print(f"# warm-up {args.warmup}, timed {args.iters} alternating calls per model and batch\n")
    header = ["model", "batch", "median ms/batch", "p90 ms/batch", "images/s",
              "speed vs BlazePose full"]
    body = [[r["model"], str(r["batch"]), f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
             f"{r['images_per_s']:.1f}", f"{r['vs_blazepose_full']:.2f}x"] for r in rows]
    print(markdown_table(header, body, text_columns=1))
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    if k != "json"}
        write_json(args.json, {"benchmark": "vs_blazepose", "machine": machine,
                               "settings": settings, "rows": rows})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
