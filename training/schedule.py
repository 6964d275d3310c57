"""The 1-cycle schedule of MargiPose: learning rate and momentum as a function of the batch count.

With T the total number of batches, both hyperparameters are linear in the batch count t between
the milestones (t = 1, 0.45 T, 0.9 T, T):

    lr        0.1 lr_max -> lr_max -> 0.1 lr_max -> 1e-3 x 0.1 lr_max
    momentum  0.9        -> 0.85   -> 0.9        -> 0.9

The count is incremented before use, so the first batch trains with t = 1 (lr = 0.1 lr_max).
Counts past T keep the final values. The reference sets these on plain SGD (no weight decay, no
Nesterov) before every batch; `OneCycle.apply` does the same to a torch optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.optim import Optimizer

# Milestones as fractions of the total batch count, and the values there.
PEAK_FRACTION = 0.45
END_OF_CYCLE_FRACTION = 0.9
LOW_LR_FRACTION = 0.1  # of lr_max at the first batch and at the end of the cycle
FINAL_LR_FRACTION = 1e-3  # of the low LR at the last batch
MOMENTUM_HIGH, MOMENTUM_LOW = 0.9, 0.85


def _interpolate(t: float, ts: tuple[float, ...], values: tuple[float, ...]) -> float:
    """Piecewise-linear interpolation through (ts, values), constant outside."""
    if t <= ts[0]:
        return values[0]
    for i in range(1, len(ts)):
        if t < ts[i]:
            t0, t1, v0, v1 = ts[i - 1], ts[i], values[i - 1], values[i]
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return values[-1]


def one_cycle(step: int, total_steps: int, lr_max: float) -> tuple[float, float]:
    """Return (lr, momentum) for the 1-based batch count `step` of `total_steps`."""
    if total_steps < 3:
        raise ValueError(f"The 1-cycle schedule needs at least 3 batches, got {total_steps}")
    if step < 1:
        raise ValueError(f"Batch counts start at 1, got {step}")
    if not lr_max > 0:
        raise ValueError(f"lr_max must be positive, got {lr_max}")
    # Milestones stay real numbers (0.45 T need not be a whole batch), as in the reference.
    ts = (1.0, PEAK_FRACTION * total_steps, END_OF_CYCLE_FRACTION * total_steps,
          float(total_steps))
    low = LOW_LR_FRACTION * lr_max
    lr = _interpolate(step, ts, (low, lr_max, low, FINAL_LR_FRACTION * low))
    momentum = _interpolate(step, ts, (MOMENTUM_HIGH, MOMENTUM_LOW, MOMENTUM_HIGH, MOMENTUM_HIGH))
    return lr, momentum


@dataclass(frozen=True)
class OneCycle:
    """The 1-cycle schedule of one run; `apply` sets an optimiser's hyperparameters for a batch."""

    total_steps: int
    lr_max: float

    def __call__(self, step: int) -> tuple[float, float]:
        return one_cycle(step, self.total_steps, self.lr_max)

    def apply(self, optimiser: Optimizer, step: int) -> tuple[float, float]:
        """Set lr and momentum of every param group for batch `step` (1-based); return them.

        A group with an "lr_scale" entry trains at that multiple of the scheduled rate (e.g. a
        pretrained trunk fine-tuned slower than the heads); the rate returned is the unscaled one.
        """
        lr, momentum = self(step)
        for group in optimiser.param_groups:
            if "momentum" not in group:
                raise ValueError(f"{type(optimiser).__name__} has no momentum to schedule")
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["momentum"] = momentum
        return lr, momentum
