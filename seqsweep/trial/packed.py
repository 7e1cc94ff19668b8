"""Packed training of several trials of one study as one computation (``models.packed``).

Trials can share a pack when they share its shape: the structure's (the units and
activation of every layer, batch norm, the optimizer kind), epochs and batch size;
they may differ in rates (dropout, learning rate, weight decay, l2). Each member still
gets its own result or its own failure; one member that diverges fails alone, because
members share no weights.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.db.records import EpochRecord, TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import epoch_order_seed, order_seed, pack_dropout_seed, trial_seed
from seqsweep.settings import PACK_CACHE_SIZE, StudySettings
from seqsweep.structure import SGD_MOMENTUM, Structure
from seqsweep.trial.alone import (
    STEPS_PER_EXECUTION,
    binary_auc,
    current_device,
    epoch_record,
    evaluate_test,
    fit_leased,
    targets,
    trial_result,
)
from seqsweep.trial.traces import release_traces
from seqsweep.vocab import Task

#: Called at each epoch's end with the metrics of the trials still training, by trial
#: number; returns the numbers that stop there (their pruner says so).
EpochJudge = Callable[[int, dict[int, EpochRecord]], set[int]]

#: What the pack reports per member, by task (``models.packed.PackedMetrics``).
_METRICS = {
    Task.CLASSIFICATION: ("loss", "accuracy"),
    Task.REGRESSION: ("loss", "mean_squared_error", "mean_absolute_error"),
}


_LEASES = "trials' leases"


def pack_shape(params: dict[str, Any], settings: StudySettings) -> tuple[Any, ...]:
    """What trials of one pack must share: the structure's shape, epochs and batch size."""
    return (
        Structure.from_params(params).shape,
        int(params.get("epochs", settings.epochs)),
        int(params.get("batch_size", settings.batch_size)),
    )


def member_of(structure: Structure) -> Any:
    """What a trial holds of its own in a pack: its rates (``models.packed.Member``)."""
    from models.packed import Member

    return Member(
        dropouts=structure.dropouts,
        learning_rate=structure.learning_rate,
        l2=structure.l2,
        weight_decay=structure.weight_decay,
    )


def build_pack(
    splits: Splits,
    members: Sequence[Structure],
    seeds: Sequence[int],
    dropout_seeds: Sequence[int],
    *,
    steps_per_execution: int = 1,
) -> Any:
    """The compiled pack of ``members`` (structures of one shape) for ``splits``'s data;
    member k starts from the weights its network gets alone under ``seeds[k]``."""
    from models.packed import build_packed

    first = members[0]
    return build_packed(
        splits.x_train.shape[1],
        splits.n_outputs,
        units=first.units,
        activations=first.activations,
        batch_norm=first.batch_norm,
        optimizer=first.optimizer,
        momentum=SGD_MOMENTUM,
        members=[member_of(s) for s in members],
        seeds=seeds,
        dropout_seeds=dropout_seeds,
        task=str(splits.task),
        steps_per_execution=steps_per_execution,
    )


#: Built packs of this process, by what their traced step depends on (:func:`_cache_key`;
#: not :func:`seqsweep.trial.train.pack_key`, which says which trials may share a pack).
_BUILT: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
#: How often this process asked for each key, most recent last: a pack is kept only once
#: its key has come a second time, so a study whose keys never repeat holds no packs.
_ASKED: OrderedDict[tuple[Any, ...], int] = OrderedDict()
_ASKED_SIZE = 256


def _cache_key(
    splits: Splits, members: Sequence[Structure], steps_per_execution: int
) -> tuple[Any, ...]:
    """What makes one compiled pack differ from another: the data's widths and task, the
    structure's shape (units, activations, batch norm, optimizer kind), the member count,
    which layers drop out at all, whether any member has L2, steps per execution."""
    from models.packed import reuse_key

    return (
        splits.x_train.shape[1],
        splits.n_outputs,
        str(splits.task),
        members[0].shape,
        reuse_key([member_of(s) for s in members]),
        steps_per_execution,
    )


def reused_pack(
    splits: Splits,
    members: Sequence[Structure],
    seeds: Sequence[int],
    dropout_seeds: Sequence[int],
    *,
    steps_per_execution: int = 1,
) -> tuple[tuple[Any, ...], Any]:
    """:func:`build_pack`'s pack, and its :func:`_cache_key`: a built one of that key, reset
    (taken out of the cache: :func:`keep_pack` puts it back once it trained), or a new one.
    Reuse traces nothing new; each new build leaks the traced step that Keras keeps after
    ``clear_session``."""
    from models.packed import reset_pack

    key = _cache_key(splits, members, steps_per_execution)
    _ASKED[key] = _ASKED.get(key, 0) + 1
    _ASKED.move_to_end(key)
    while len(_ASKED) > _ASKED_SIZE:
        _ASKED.popitem(last=False)
    model = _BUILT.pop(key, None)
    if model is None:
        model = build_pack(
            splits, members, seeds, dropout_seeds, steps_per_execution=steps_per_execution
        )
    else:
        reset_pack(model, [member_of(s) for s in members], seeds, dropout_seeds)
    return key, model


def keep_pack(key: tuple[Any, ...], model: Any) -> None:
    """Keep a trained pack for the next of its key once that key has come twice, else
    release it; the least recently used beyond ``PACK_CACHE_SIZE`` are released too."""
    if _ASKED.get(key, 0) < 2:
        release_traces(model)
        return
    _BUILT[key] = model
    _BUILT.move_to_end(key)
    while len(_BUILT) > PACK_CACHE_SIZE:
        release_traces(_BUILT.popitem(last=False)[1])


def run_pack(
    params: Sequence[dict[str, Any]],
    numbers: Sequence[int],
    splits: Splits,
    settings: StudySettings,
    *,
    study_seed: int,
    should_stop: Callable[[], bool] | None = None,
    keep: Callable[[Any], None] | None = None,
    auc: bool = False,
    stops_at: EpochJudge | None = None,
) -> list[TrialResult | TrialError]:
    """Train trials ``numbers`` (with ``params``) of one shape together; one outcome each.

    ``keep`` gets the trained pack (``export`` extracts a member from it); ``auc`` adds
    each member's val and test AUC. With ``stops_at`` (a pruner) the pack trains one
    epoch at a time, and the members it names at an epoch's end leave the pack there
    (see :func:`_fit_pruning`).
    """
    import keras

    shape, epochs, batch_size = pack_shape(params[0], settings)
    if any(pack_shape(p, settings) != (shape, epochs, batch_size) for p in params):
        raise ValueError("every member of a pack must share its structure, epochs and batch_size")
    structures = [Structure.from_params(p) for p in params]
    first = structures[0]
    seeds = [trial_seed(study_seed, n) for n in numbers]
    started = time.perf_counter()
    dropout_seeds = [pack_dropout_seed(seeds, i + 1) for i in range(len(first.units))]

    # The packs this run takes from the cache or builds (a pruned pack's slices are packs
    # of their own key); they go back only once the run has ended well. One whose fit
    # raised is released and dropped: on JAX its variables may still be detached (the
    # trainer purges them during fit and reattaches them only at its end).
    used: list[tuple[tuple[Any, ...], Any]] = []

    def build(members: Sequence[int]) -> Any:
        key, model = reused_pack(
            splits,
            [structures[k] for k in members],
            [seeds[k] for k in members],
            dropout_seeds,
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        used.append((key, model))
        return model

    try:
        model = build(range(len(numbers)))
        keras.utils.set_random_seed(order_seed(study_seed))
        if stops_at is None:
            fitted = _fit(model, splits, len(numbers), epochs, batch_size, should_stop, auc)
        else:
            fitted = _fit_pruning(
                model, build, splits, numbers, epochs, batch_size, should_stop, stops_at,
                study_seed,
            )  # fmt: skip
        if keep is not None:
            keep(fitted.model)
        for key, built in used:
            keep_pack(key, built)
    except BaseException:
        for _, built in used:
            release_traces(built)
        raise
    finally:
        keras.backend.clear_session()
    share = (time.perf_counter() - started) / len(numbers)
    device = current_device()
    pack = tuple(numbers) if len(numbers) > 1 else None
    return [
        _member_outcome(
            k if stops_at is None else 0,
            fitted.histories[k],
            fitted.tests[k],
            share,
            device,
            pack,
            splits,
            fitted.extras[k],
            pruned=k in fitted.pruned,
        )
        for k in range(len(numbers))
    ]


@dataclass(frozen=True)
class _Fitted:
    """A trained pack: each member's history, test scores and extra metrics, and the
    members that were pruned. Without a pruner every member shares the pack's history
    (``m{k}_*``); with one, each has its own, as ``m0_*`` of a pack of one."""

    model: Any
    histories: list[dict[str, list[float]]]
    tests: list[dict[str, float]]
    extras: list[dict[str, float]]
    pruned: frozenset[int] = frozenset()


def _fit(
    model: Any,
    splits: Splits,
    members: int,
    epochs: int,
    batch_size: int,
    should_stop: Callable[[], bool] | None,
    auc: bool,
) -> _Fitted:
    """Train a pack for all its epochs in one ``fit``."""
    import keras

    from models.packed import split_members

    y_train, y_val, y_test = targets(keras, splits)
    logs = fit_leased(
        keras, model, splits, y_train, y_val, epochs=epochs, batch_size=batch_size,
        should_stop=should_stop, whose=_LEASES,
    )  # fmt: skip
    history = split_members(logs)
    test = split_members(evaluate_test(model, splits, y_test, batch_size))
    extras = _aucs(model, splits, members) if auc else [{} for _ in range(members)]
    return _Fitted(model, [history] * members, [test] * members, extras)


def _aucs(model: Any, splits: Splits, members: int) -> list[dict[str, float]]:
    """Each member's val and test AUC (binary classification), from the pack's outputs."""
    from keras import ops

    out: list[dict[str, float]] = [{} for _ in range(members)]
    for split, x, y in (
        ("val", splits.x_val, splits.y_val),
        ("test", splits.x_test, splits.y_test),
    ):
        scores = ops.convert_to_numpy(ops.softmax(model(x, training=False), axis=-1))
        for k in range(members):
            out[k][f"{split}_auc"] = binary_auc(y, scores[k, :, 1])
    return out


def _member_outcome(
    k: int,
    history: dict[str, list[float]],
    test: dict[str, float],
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None,
    splits: Splits,
    extra: dict[str, float],
    *,
    pruned: bool = False,
) -> TrialResult | TrialError:
    """Member ``k``'s result, from the pack's ``m{k}_*`` metrics; a divergence is its own."""
    names = _METRICS[splits.task]
    own = {f"{pre}{m}": history[f"{pre}m{k}_{m}"] for pre in ("", "val_") for m in names}
    scores = {m: test[f"m{k}_{m}"] for m in names}
    try:
        return trial_result(
            own, scores, duration_s=duration_s, device=device, pack=pack, splits=splits,
            extra=extra, pruned=pruned,
        )  # fmt: skip
    except TrialError as exc:
        return exc


def _fit_pruning(
    model: Any,
    build: Callable[[Sequence[int]], Any],
    splits: Splits,
    numbers: Sequence[int],
    epochs: int,
    batch_size: int,
    should_stop: Callable[[], bool] | None,
    stops_at: EpochJudge,
    study_seed: int,
) -> _Fitted:
    """Train a pack one epoch at a time; members ``stops_at`` names leave it at that epoch.

    A leaving member is scored on the test split with the pack, then the pack is rebuilt
    without it: the survivors' weights and optimizer state (moments, step count) and the
    dropout generator's state carry over, sliced along the member axis, so the leavers
    cost nothing more and the pack ends once every member has stopped. The survivors'
    dropout masks are drawn for the smaller pack from then on.
    """
    import keras

    from models.packed import split_members

    names = _METRICS[splits.task]
    y_train, y_val, y_test = targets(keras, splits)
    active = list(range(len(numbers)))  # the pack's members, by their place in ``numbers``
    histories: list[dict[str, list[float]]] = [
        {f"{pre}m0_{m}": [] for pre in ("", "val_") for m in names} for _ in numbers
    ]
    tests: list[dict[str, float]] = [{} for _ in numbers]
    pruned: set[int] = set()
    for epoch in range(1, epochs + 1):
        keras.utils.set_random_seed(epoch_order_seed(study_seed, epoch))
        epoch_logs = fit_leased(
            keras, model, splits, y_train, y_val, epochs=epoch, initial_epoch=epoch - 1,
            batch_size=batch_size, should_stop=should_stop, whose=_LEASES,
        )  # fmt: skip
        logs = split_members(epoch_logs)
        for j, k in enumerate(active):
            for pre in ("", "val_"):
                for m in names:
                    histories[k][f"{pre}m0_{m}"].append(float(logs[f"{pre}m{j}_{m}"][-1]))
        leaving: list[int] = []
        if epoch < epochs:
            records = {
                numbers[k]: epoch_record(
                    epoch,
                    {key.replace("m0_", ""): v[-1] for key, v in histories[k].items()},
                    splits,
                )
                for k in active
            }
            stop = stops_at(epoch, records)
            leaving = [j for j, k in enumerate(active) if numbers[k] in stop]
        if epoch == epochs or leaving:
            scores = split_members(evaluate_test(model, splits, y_test, batch_size))
            done = range(len(active)) if epoch == epochs else leaving
            for j in done:
                tests[active[j]] = {f"m0_{m}": float(scores[f"m{j}_{m}"]) for m in names}
            pruned.update(active[j] for j in leaving)
        if epoch == epochs or len(leaving) == len(active):
            break
        if leaving:
            stay = [j for j in range(len(active)) if j not in leaving]
            active = [active[j] for j in stay]
            model = _shrunk(model, build(active), stay)
    return _Fitted(model, histories, tests, [{} for _ in numbers], frozenset(pruned))


def _shrunk(old: Any, new: Any, stay: Sequence[int]) -> Any:
    """``new`` (a pack of the members ``stay`` of ``old``) holding their trained state."""
    from keras import ops

    new.optimizer.build(new.trainable_variables)
    pairs = [
        *zip(old.variables, new.variables, strict=True),
        *zip(old.optimizer.variables, new.optimizer.variables, strict=True),
    ]
    for source, target in pairs:
        value = ops.convert_to_numpy(source)
        if tuple(source.shape) != tuple(target.shape):
            value = value[list(stay)]  # a per-member variable: the survivors' slices
        target.assign(value)
    return new
