"""The embedded default backend: the exported model, in-process, run by one of three runtimes.

`service.backends.runtimes` holds them: torch runs `model.pt` (CPU or GPU); ONNX Runtime and
OpenVINO run `model.onnx`. Inference runs on one dedicated worker thread (each runtime releases
the GIL inside its kernels), so the event loop never blocks and batches never interleave on the
device.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from posecontract.layout import POSE, ModelContract
from service.backends.base import ModelInfo
from service.backends.runtimes import FILES, Runtime, check_runtime, open_runtime
from service.cpus import spare_cpu_threads
from service.errors import BackendUnavailable

log = logging.getLogger(__name__)

def resolve_model_file(repository: Path, name: str, version: int | None,
                       file: str = "model.pt") -> tuple[Path, str]:
    """`<repository>/<name>/<version>/<file>`; the highest version when None.

    The version is chosen among those holding any exported file (model.pt, model.onnx), so a
    runtime never falls back silently to an older version that happens to have its file.
    """
    model_dir = repository / name
    if not model_dir.is_dir():
        raise BackendUnavailable(
            f"Model {name!r} not found in {repository}; export one with "
            f"`margipose-export --variant margipose-lite --repository {repository}`"
        )
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()
                      and any((p / f).is_file() for f in set(FILES.values())))
    if not versions:
        raise BackendUnavailable(f"{model_dir} has no version folder with an exported model "
                                 f"({' or '.join(sorted(set(FILES.values())))})")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise BackendUnavailable(f"Version {chosen} of {name!r} not found; have {versions}")
    path = model_dir / str(chosen) / file
    if not path.is_file():
        runtimes = [r for r, f in FILES.items() if (model_dir / str(chosen) / f).is_file()]
        raise BackendUnavailable(
            f"Version {chosen} of {name!r} has no {file}; serve it with --runtime "
            f"{' or '.join(runtimes)}, or write the file (`margipose-export --onnx-beside`)")
    return path, str(chosen)


class LocalBackend:
    """Runs the model with `runtime` (torch: model.pt; onnxruntime, openvino: model.onnx).

    `contract` is the model's (the pose model's by default; the person detector's for the
    detector, which gets a backend of its own)."""

    kind = "local"

    def __init__(self, repository: Path, name: str, version: int | None = None,
                 device: str = "cpu", threads: int = 0,
                 warmup_batch_sizes: tuple[int, ...] = (1,), runtime: str = "torch",
                 contract: ModelContract = POSE):
        check_runtime(runtime)
        self.contract = contract
        self._repository, self._name, self._version = Path(repository), name, version
        self._device = device
        self._threads = threads
        self._warmup = warmup_batch_sizes
        self.runtime = runtime
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-infer")
        self._model: Runtime | None = None
        self.threads = 0  # intra-op threads inference runs with, once started
        self._info: ModelInfo | None = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        threads = self._threads
        if threads <= 0 and self._device == "cpu":
            threads = spare_cpu_threads()
        path, version = resolve_model_file(self._repository, self._name, self._version,
                                           FILES[self.runtime])
        model = open_runtime(self.runtime, path, self._device, threads, self.contract)
        for batch in self._warmup:  # the first calls of every runtime are slow
            self._run(model, np.zeros((batch, *self.contract.input.dims), dtype=np.uint8))
        self._model = model
        self._info = ModelInfo(self._name, version, model.card)
        self.threads = model.threads
        log.info("loaded %s version %s with %s on %s (%d intra-op threads)", self._name,
                 version, self.runtime, self._device, self.threads)

    def _run(self, model: Runtime, images: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs by key (the pose model: the five of OUTPUTS, and `visibility`
        if it has one)."""
        outputs = model.run(images)
        if len(outputs) != len(model.outputs):
            raise BackendUnavailable(f"The model returned {len(outputs)} outputs; its card "
                                     f"lists {[s.name for s in model.outputs]}")
        return {spec.key: out for spec, out in zip(model.outputs, outputs, strict=True)}

    async def stop(self) -> None:
        self._model = None
        self._executor.shutdown(wait=True)

    async def ready(self) -> bool:
        return self._model is not None

    def info(self) -> ModelInfo:
        if self._info is None:
            raise BackendUnavailable("The model is not loaded yet")
        return self._info

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        model = self._model
        if model is None:
            raise BackendUnavailable("The model is not loaded")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, model, images
        )
