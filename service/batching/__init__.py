"""Batching of person crops across concurrent requests: the batch loop (`loop.Batcher`),
admission (`admission.Admission`) and the estimators admission plans with (`estimators`).
The design and its reasons: docs/batching.md."""

from service.batching.admission import (
    ADMISSION_SHARE,
    MIN_RETRY_AFTER_S,
    Admission,
    Limits,
    Reservation,
)
from service.batching.estimators import RATE_WINDOW_S, ArrivalRate, BatchCost, Lateness
from service.batching.loop import Batcher

__all__ = ["ADMISSION_SHARE", "MIN_RETRY_AFTER_S", "RATE_WINDOW_S", "Admission", "ArrivalRate",
           "BatchCost", "Batcher", "Lateness", "Limits", "Reservation"]
