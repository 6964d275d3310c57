"""The embedded default backend: the exported TorchScript model, in-process, CPU or GPU.

Inference runs on one dedicated worker thread (torch releases the GIL inside its kernels), so
the event loop never blocks and batches never interleave on the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from posecontract import torchscript
from posecontract.layout import INPUT, OUTPUTS
from service.backends.base import ModelInfo
from service.cpus import spare_cpu_threads
from service.errors import BackendUnavailable

log = logging.getLogger(__name__)

CARD_FILE = "model.json"  # the exporter's embedded model card


def resolve_model_file(repository: Path, name: str, version: int | None) -> tuple[Path, str]:
    """Find `<repository>/<name>/<version>/model.pt`; the highest version when None."""
    model_dir = repository / name
    if not model_dir.is_dir():
        raise BackendUnavailable(
            f"Model {name!r} not found in {repository}; export one with "
            f"`margipose-export --variant margipose-lite --repository {repository}`"
        )
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()
                      and (p / "model.pt").is_file())
    if not versions:
        raise BackendUnavailable(f"{model_dir} has no version folder with a model.pt")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise BackendUnavailable(f"Version {chosen} of {name!r} not found; have {versions}")
    return model_dir / str(chosen) / "model.pt", str(chosen)


class LocalBackend:
    """Runs `model.pt` with torch on `device`."""

    kind = "local"

    def __init__(self, repository: Path, name: str, version: int | None = None,
                 device: str = "cpu", threads: int = 0,
                 warmup_batch_sizes: tuple[int, ...] = (1,)):
        self._repository, self._name, self._version = Path(repository), name, version
        self._device = torch.device(device)
        self._threads = threads
        self._warmup = warmup_batch_sizes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-infer")
        self._model: torch.jit.ScriptModule | None = None
        self.threads = 0  # torch intra-op threads inference runs with, once started
        self._info: ModelInfo | None = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        if self._threads > 0:
            torch.set_num_threads(self._threads)
        elif self._device.type == "cpu":
            torch.set_num_threads(min(torch.get_num_threads(), spare_cpu_threads()))
        path, version = resolve_model_file(self._repository, self._name, self._version)
        files = {CARD_FILE: ""}
        try:
            model = torchscript.load(path, self._device, files)
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailable(f"Cannot load {path}: {exc}") from exc
        card = json.loads(files[CARD_FILE]) if files[CARD_FILE] else {}
        model.eval()
        for batch in self._warmup:  # the first calls of a TorchScript model are slow
            self._run(model, np.zeros((batch, *INPUT.dims), dtype=np.uint8))
        self._model = model
        self._info = ModelInfo(self._name, version, card)
        # Read in the inference thread: with OpenMP the count is that thread's setting.
        self.threads = torch.get_num_threads()
        log.info("loaded %s version %s on %s (%d intra-op threads)", self._name, version,
                 self._device, self.threads)

    def _run(self, model: torch.jit.ScriptModule, images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = model(torch.from_numpy(images).to(self._device))
        return {spec.key: t.cpu().numpy() for spec, t in zip(OUTPUTS, outputs, strict=True)}

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
