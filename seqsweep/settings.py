"""Study settings and the Celery configuration every process shares.

:class:`StudySettings` are the knobs of a study that are not searched: they
are stored with the study and travel to workers through the results DB, so a
worker needs nothing but the broker and DB URLs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsweep.errors import UsageError
from seqsweep.vocab import (
    DEFAULT_OBJECTIVE,
    DEFAULT_SAMPLER,
    OBJECTIVES,
    TASK_OBJECTIVES,
    Objective,
    Pruner,
    Sampler,
    Task,
)

#: Redis redelivers a message that is still unacknowledged after this long. It
#: must exceed the longest hard time limit, or a long trial runs twice at once.
VISIBILITY_TIMEOUT_S = 6 * 3600
MAX_TRIAL_TIMEOUT_S = 5 * 3600
#: Extra time between the soft limit (recorded as a failed trial) and the hard
#: kill, so the worker can write the failure before it is killed.
HARD_LIMIT_GRACE_S = 30

#: A worker renews the lease on its trial every LEASE_S / 4 seconds; a lease
#: left to expire means the worker is gone and the trial is requeued. Longer
#: leases ride out longer DB outages; shorter ones requeue lost trials sooner.
LEASE_ENV = "SEQSWEEP_LEASE_S"
DEFAULT_LEASE_S = 60.0
#: ``launch`` names itself to the local worker node it starts, which stops once ``launch``
#: is gone (even killed with -9): its trials get this long to finish, then the node and
#: its pool processes are killed, as ``launch`` itself stops them when a study ends.
PARENT_ENV = "SEQSWEEP_LAUNCH_PID"
STOP_GRACE_ENV = "SEQSWEEP_STOP_GRACE_S"
DEFAULT_STOP_GRACE_S = 30.0


def stop_grace_seconds() -> float:
    """How long a local node whose ``launch`` died lets its trials finish."""
    return env_seconds(STOP_GRACE_ENV, DEFAULT_STOP_GRACE_S, "e.g. 30")


#: A test hook: a file to which workers append every training run and result write
#: (``worker.tasks._witness``), the fault tests' independent record of double counts.
WITNESS_ENV = "SEQSWEEP_WITNESS_FILE"
#: Overrides VISIBILITY_TIMEOUT_S on Redis. Only for testing redelivery: a
#: value below the longest trial makes Redis hand running trials out again
#: (harmless, since the claim refuses them, but wasteful).
VISIBILITY_ENV = "SEQSWEEP_REDIS_VISIBILITY_TIMEOUT_S"
#: Folder of ``report``'s importance cache (default: ``$XDG_CACHE_HOME/seqsweep``,
#: else ``~/.cache/seqsweep``). Only speed depends on it; it can always be deleted.
CACHE_ENV = "SEQSWEEP_CACHE_DIR"


def cache_dir() -> Path:
    """The folder of seqsweep's caches (it may not exist yet)."""
    if folder := os.environ.get(CACHE_ENV, "").strip():
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "seqsweep"


#: ``python -m worker --gpus`` hands its pool processes the GPU indices (``0,2``) here;
#: each pool process pins one of them through ``CUDA_VISIBLE_DEVICES``.
GPUS_ENV = "SEQSWEEP_GPUS"
#: Default retry budget of a trial whose worker vanished (``--max-attempts``).
DEFAULT_MAX_ATTEMPTS = 3

#: Backstop against memory that TensorFlow keeps across trials despite
#: ``clear_session`` and ``release_traces`` (bench/memory.py): recycle a pool process
#: once a task leaves it above this resident size (KiB). Memory is bounded directly,
#: not by a task count: a task may train one trial or a pack of 32 (and a pack's partner
#: messages count as tasks too), and unpacked training on JAX does not grow at all.
MAX_MEMORY_PER_CHILD_KIB = 1536 * 1024
#: No recycling by task count (Celery's default), for the reason above.
MAX_TASKS_PER_CHILD = None


DEFAULT_PACK_SIZE = 32
#: Built packs a worker process keeps for reuse (least recently used dropped first):
#: building one anew costs a new traced step that Keras never frees (bench/memory.py).
#: It must cover the few shapes a study cycles through, or each pack is dropped before
#: its key comes back; packs whose key never repeats are not kept at all
#: (``seqsweep.trial.packed.keep_pack``), so a larger cache costs nothing there.
PACK_CACHE_SIZE = 8
#: ``--pack-size auto``: each worker process measures its own pack size per device and
#: shape (``seqsweep.trial.autopack``); the study stores the word, not a number.
PACK_SIZE_AUTO = "auto"
#: The pack sizes ``auto`` times, smallest first, up to the bound of ``--pack-size``.
AUTO_PACK_CANDIDATES = (1, 4, 16, 64, 256)
#: ``auto`` stops growing the pack once one step of the next candidate costs a member
#: more than this share of what it cost at the size before: past it, a larger pack
#: mostly holds trials back that another worker process could start.
AUTO_PACK_MIN_GAIN = 0.10
#: A pack takes at most this share (1/N) of its study's queued FLOPs: the first worker
#: to reach the heaviest shape takes half of what is queued, the next half of the rest,
#: so every worker gets some of it. In a simulation of the default study on two workers,
#: halves finished first among 1/2 to 1/8 (splitting finer costs the heavy packs more
#: per trial than it saves at the end).
PACK_SHARE_OF_QUEUE = 2
#: ... but a pack of fewer FLOPs is never split: it trains in seconds, and narrow
#: networks gain most from large packs (see README, "Where packing wins").
PACK_UNSPLIT_FLOPS = 100 * 10**9

#: The median pruner stops nothing at an epoch until this many other trials reached it
#: (Optuna's MedianPruner waits for 5 trials; the trial itself makes this 5).
MEDIAN_MIN_TRIALS = 4
#: Objectives a pruner can follow: those the worker sees at every epoch end.
PRUNABLE_OBJECTIVES = ("val_accuracy", "val_loss")


@dataclass(frozen=True)
class Bound:
    """The integers a flag or a space value may take, and how to fix a value outside."""

    flag: str
    low: int
    high: int
    fix: str


#: Every integer a user gives (flag, API argument, space value, message field) has its
#: bounds here, once: beyond them a value exhausts memory, forks the machine down,
#: holds a write lock for minutes or overflows a 64-bit column.
BOUNDS: dict[str, Bound] = {
    "trials": Bound("--trials", 1, 100_000, "e.g. --trials 100; split larger searches"),
    "epochs": Bound("--epochs", 1, 10_000, "use e.g. --epochs 10, as in the article"),
    "batch_size": Bound("--batch-size", 1, 1_000_000, "use e.g. --batch-size 32"),
    "dense_units": Bound("dense_units", 1, 65_536, "use a unit count such as 64"),
    "pack_size": Bound("--pack-size", 1, 256, "use --pack-size 1 to turn packing off, or 32"),
    "local_workers": Bound("--local-workers", 0, 256, "use one per core; 0 for remote only"),
    "concurrency": Bound("--concurrency", 1, 256, "use one per core"),
    "per_gpu": Bound("--per-gpu", 1, 64, "use 1, or a few for small models"),
    "max_attempts": Bound("--max-attempts", 1, 100, "use e.g. 3"),
    "in_flight": Bound("--in-flight", 1, 10_000, "use about twice the worker processes"),
    "top_k": Bound("--top", 1, 100_000, "e.g. --top 5"),
    "trial": Bound("--trial", 0, 100_000 - 1, "see the trial numbers in report"),
    "reduction_factor": Bound(
        "--reduction-factor", 2, 100, "use e.g. 3: a third of the trials go on at each rung"
    ),
    "min_epochs": Bound("--min-epochs", 1, 10_000, "use e.g. --min-epochs 1"),
}
MAX_PACK_SIZE = BOUNDS["pack_size"].high
#: The smallest validation or test fraction: below it a split is empty for any dataset.
MIN_FRACTION = 0.01
#: Bytes of a space file and of a data file read in full.
MAX_SPACE_FILE_BYTES = 1 << 20
MAX_DATA_FILE_BYTES = 1 << 30


def check_bounded(name: str, value: object) -> int:
    """Return ``value`` if it is an integer within ``BOUNDS[name]``; else one-line UsageError."""
    bound = BOUNDS[name]
    if isinstance(value, int) and not isinstance(value, bool) and bound.low <= value <= bound.high:
        return value
    raise UsageError(
        f"{bound.flag} must be an integer in [{bound.low}, {bound.high}], "
        f"got {short_value(value)}; {bound.fix}"
    )


def check_pack_size(value: object) -> int | str:
    """Return ``value`` if it is ``"auto"`` or an integer within ``BOUNDS["pack_size"]``;
    else one-line UsageError."""
    if value == PACK_SIZE_AUTO:
        return PACK_SIZE_AUTO
    bound = BOUNDS["pack_size"]
    if isinstance(value, int) and not isinstance(value, bool) and bound.low <= value <= bound.high:
        return value
    raise UsageError(
        f"{bound.flag} must be {PACK_SIZE_AUTO} or an integer in [{bound.low}, {bound.high}], "
        f"got {short_value(value)}; use --pack-size auto to measure it per device, 1 to turn "
        "packing off, or 32"
    )


def parse_pack_size(text: str) -> int | str:
    """Parse ``--pack-size``: ``auto`` or an integer within ``BOUNDS["pack_size"]``."""
    if text.strip() == PACK_SIZE_AUTO:
        return PACK_SIZE_AUTO
    try:
        value: object = int(text.strip())
    except ValueError:  # not a number, or more digits than Python converts
        value = text
    return check_pack_size(value)


def short_value(value: object) -> str:
    """``repr`` of a user's value, cut short: it may be huge (and Python refuses to print
    an integer of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def parse_bounded(name: str, text: str) -> int:
    """Parse a flag's text as an integer within ``BOUNDS[name]``."""
    try:
        value: object = int(text.strip())
    except ValueError:  # not a number, or more digits than Python converts
        value = text
    return check_bounded(name, value)


@dataclass(frozen=True)
class StudySettings:
    """Settings of a study that are fixed for all its trials.

    ``epochs`` and ``batch_size`` are used unless the search space makes them
    searchable, in which case each trial's own value wins.
    """

    epochs: int = 10
    batch_size: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    trial_timeout_s: float = 3600.0
    #: Trials of one shape a worker trains together as one computation; 1 turns packing off;
    #: ``"auto"``: each worker process measures it per device and shape.
    pack_size: int | str = DEFAULT_PACK_SIZE
    task: Task = Task.CLASSIFICATION
    #: The final metric that ranks trials (``seqsweep.vocab.OBJECTIVES``).
    objective: str = DEFAULT_OBJECTIVE[Task.CLASSIFICATION]
    #: ``module:function`` of a user's build function (``--model``), and the SHA-256
    #: of that module's source at launch; None: the built-in networks.
    model: str | None = None
    model_sha256: str | None = None
    #: How trials' parameters are picked (``seqsweep.vocab.Sampler``).
    sampler: Sampler = DEFAULT_SAMPLER
    #: What stops bad trials early (``seqsweep.pruning``), ASHA's eta, and the first
    #: epoch a trial may be stopped at (ASHA's first rung, the median rule's warm-up).
    pruner: Pruner = Pruner.NONE
    reduction_factor: int = 3
    min_epochs: int = 1

    def __post_init__(self) -> None:
        check_bounded("epochs", self.epochs)
        check_bounded("batch_size", self.batch_size)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"setting {name}: must be a number, got {value!r}; use e.g. 0.2")
            if not MIN_FRACTION <= value < 0.5:
                raise UsageError(
                    f"setting {name}: must be in [{MIN_FRACTION}, 0.5), got "
                    f"{short_value(value)}; use e.g. 0.2"
                )
        check_pack_size(self.pack_size)
        if self.task not in tuple(Task):
            raise UsageError(
                f"--task: must be classification or regression, got {short_value(self.task)}"
            )
        object.__setattr__(self, "task", Task(self.task))
        if self.sampler not in tuple(Sampler):
            raise UsageError(
                f"--sampler {short_value(self.sampler)}: must be one of "
                f"{', '.join(Sampler)}; random is the default"
            )
        object.__setattr__(self, "sampler", Sampler(self.sampler))
        allowed = TASK_OBJECTIVES[self.task]
        if self.objective not in allowed:
            raise UsageError(
                f"--objective {self.objective}: a {self.task} study can optimize "
                f"{', '.join(allowed)}; pick one of them"
            )
        self._check_pruner()
        timeout = self.trial_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise UsageError(f"setting trial_timeout_s: must be a number, got {timeout!r}")
        if not 0 < timeout <= MAX_TRIAL_TIMEOUT_S:
            raise UsageError(
                f"setting trial_timeout_s: must be in (0, {MAX_TRIAL_TIMEOUT_S}] seconds, "
                f"got {timeout!r}; the broker would redeliver a longer trial while it runs"
            )

    def _check_pruner(self) -> None:
        if self.pruner not in tuple(Pruner):
            raise UsageError(
                f"--pruner {short_value(self.pruner)}: must be one of {', '.join(Pruner)}; "
                "none is the default"
            )
        object.__setattr__(self, "pruner", Pruner(self.pruner))
        check_bounded("reduction_factor", self.reduction_factor)
        check_bounded("min_epochs", self.min_epochs)
        if self.pruner is Pruner.NONE:
            return
        if self.objective not in PRUNABLE_OBJECTIVES:
            raise UsageError(
                f"--pruner {self.pruner}: the objective {self.objective} is only known once a "
                f"trial ends, not at each epoch; use --objective "
                f"{' or '.join(o for o in PRUNABLE_OBJECTIVES if o in TASK_OBJECTIVES[self.task])}"
                ", or --pruner none"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready data."""
        return {
            **dataclasses.asdict(self),
            "task": str(self.task),
            "sampler": str(self.sampler),
            "pruner": str(self.pruner),
        }

    @property
    def ranking(self) -> Objective:
        """The objective, with its direction."""
        return OBJECTIVES[self.objective]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySettings:
        """Rebuild settings stored by :meth:`to_dict`, ignoring keys a newer version added."""
        known = {f.name for f in dataclasses.fields(cls)}
        # Studies stored before packing existed go on training unpacked, as they began.
        return cls(**{"pack_size": 1, **{k: v for k, v in data.items() if k in known}})


def lease_seconds() -> float:
    """Return the lease length from ``$SEQSWEEP_LEASE_S``, or the default."""
    return env_seconds(LEASE_ENV, DEFAULT_LEASE_S, "e.g. 60")


def env_seconds(name: str, default: float, example: str) -> float:
    """Seconds from ``$name``: ``default`` when unset, a one-line error unless positive."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(f"${name}: must be a positive number of seconds, got {text!r}; {example}")
    return value
