"""``--pack-size auto``: the pack size of a shape on this process's device, measured.

A pack's step costs about the same until its matmuls fill the device, so the time a
member pays per step falls as the pack grows, then flattens. On the worker's first
pack of a shape, :func:`auto_pack_size` times one training step of packs of
``AUTO_PACK_CANDIDATES`` members (smallest first) and :func:`choose_pack_size` keeps
the smallest past which a member's step stops getting cheaper by more than
``AUTO_PACK_MIN_GAIN``. The answer is kept per (device, shape) for the life of the
process: one measurement per pool process and shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.seeds import trial_seed
from seqsweep.settings import (
    AUTO_PACK_CANDIDATES,
    AUTO_PACK_MIN_GAIN,
    MAX_PACK_SIZE,
    StudySettings,
)
from seqsweep.structure import Structure
from seqsweep.trial.packed import build_pack, pack_shape
from seqsweep.trial.traces import release_traces

#: Steps timed per candidate after the one that compiles; the best is kept (a busy
#: machine only ever makes a step slower).
TIMED_STEPS = 3

log = logging.getLogger(__name__)

_CHOSEN: dict[tuple[str, tuple[Any, ...]], int] = {}


def choose_pack_size(
    step_seconds: Mapping[int, float], min_gain: float = AUTO_PACK_MIN_GAIN
) -> int:
    """The smallest measured size past which a member's step stops falling by more than
    ``min_gain`` (a share); ``step_seconds`` maps a pack size to its whole step's time.

    With sizes s1 < s2 < ... it returns the first s_i whose next size costs a member at
    least ``(1 - min_gain)`` of s_i's per-member time, else the largest size measured.
    """
    if not step_seconds:
        raise ValueError("no pack size was measured")
    sizes = sorted(step_seconds)
    for size, bigger in pairwise(sizes):
        here, there = step_seconds[size] / size, step_seconds[bigger] / bigger
        if there > here * (1.0 - min_gain):
            return size
    return sizes[-1]


def auto_pack_size(
    params: Mapping[str, Any],
    splits: Splits,
    settings: StudySettings,
    *,
    device: str | None = None,
    step_time: Callable[[int], float] | None = None,
) -> int:
    """This process's pack size for trials of ``params``'s shape on its device.

    Measured once per (device, shape): candidates are timed in turn, and the sweep stops
    at the first that no longer pays (so a CPU rarely times the largest) or that the
    device cannot hold. ``device`` (default: this process's) and ``step_time`` replace
    the look-up and the timing (tests).
    """
    if device is None:
        from seqsweep.trial.alone import current_device

        device = current_device()
    key = (device, pack_shape(dict(params), settings))
    if key in _CHOSEN:
        return _CHOSEN[key]
    time_step = step_time if step_time is not None else _step_timer(params, splits, settings)
    measured: dict[int, float] = {}
    for size in (s for s in AUTO_PACK_CANDIDATES if s <= MAX_PACK_SIZE):
        try:
            measured[size] = time_step(size)
        except Exception as exc:  # out of device memory: the sizes before it are the answer
            if not measured or not _out_of_memory(exc):
                raise
            break
        if len(measured) >= 2 and choose_pack_size(measured) < size:
            break
    _CHOSEN[key] = choose_pack_size(measured)
    per_member = ", ".join(f"{k}: {v / k * 1e3:.3g}" for k, v in measured.items())
    log.info(
        "--pack-size auto: %d on %s for %s (ms per member-step by pack size: %s)",
        _CHOSEN[key], key[0], Structure.from_params(params).describe(), per_member,
    )  # fmt: skip
    return _CHOSEN[key]


def _out_of_memory(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("resource_exhausted", "resourceexhausted", "out of memory"))


def _step_timer(
    params: Mapping[str, Any], splits: Splits, settings: StudySettings
) -> Callable[[int], float]:
    """Seconds of one training step of a pack of ``size`` copies of ``params``'s trial,
    on one batch of the study's rows (the best of ``TIMED_STEPS``, after compiling)."""

    def step(size: int) -> float:
        import keras

        from seqsweep.trial.alone import targets

        structure = Structure.from_params(params)
        _, _, batch_size = pack_shape(dict(params), settings)
        rows = min(batch_size, len(splits.x_train))
        y_train = targets(keras, splits)[0][:rows]
        model = None
        try:
            model = build_pack(
                splits,
                [structure] * size,
                [trial_seed(0, 0)] * size,
                list(range(len(structure.units))),
            )
            x = splits.x_train[:rows]
            model.train_on_batch(x, y_train)  # compiles
            best = float("inf")
            for _ in range(TIMED_STEPS):
                started = time.perf_counter()
                model.train_on_batch(x, y_train)
                best = min(best, time.perf_counter() - started)
            return best
        finally:
            if model is not None:
                release_traces(model)
            keras.backend.clear_session()

    return step
