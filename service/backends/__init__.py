"""Inference backends behind one small protocol (`base.Backend`), and the one settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.backends.base import Backend
    from service.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (its dependencies imported only then)."""
    if settings.backend == "triton":
        # tritonclient comes with the `triton` extra.
        from service.backends.triton import TritonBackend

        version = "" if settings.model_version is None else str(settings.model_version)
        return TritonBackend(settings.triton_url, settings.model_name, version,
                             settings.triton_timeout_s,
                             start_timeout_s=settings.triton_start_timeout_s)
    # The runtime's package (torch: the `local` extra; onnxruntime, openvino) is imported when
    # the backend starts; a Triton gateway runs without any of them.
    from service.backends.local import LocalBackend

    return LocalBackend(settings.model_repository, settings.model_name, settings.model_version,
                        settings.device, settings.torch_threads,
                        warmup_batch_sizes=(1, settings.max_batch_size),
                        runtime=settings.runtime)
