"""Hyperparameter importance, cached per study and recomputed when its results change.

Ranking costs a report seconds (scikit-learn's import and 5 folds of forests) while a
finished study's answer never changes. The importance is a pure function of the
succeeded trials' parameters and objective values, so the cache is keyed by the
store's digest of the succeeded trials' results (:meth:`ResultStore.results_digest`),
the objective and the method's constants: a new or changed result gives a new key,
and a stale ranking cannot be served. The trials themselves are read only on a miss.
One small JSON file per results DB and study, in :func:`seqsweep.settings.cache_dir`,
replaced on each miss. The results DB is never written: ``report`` stays a read-only
command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scheduler import importance as imp
from scheduler.importance import Importance, ParamImportance, hyperparameter_importance
from seqsweep.db import ResultStore
from seqsweep.settings import cache_dir


def cached_importance(store: ResultStore, study_id: int, metric: str) -> Importance | None:
    """:func:`~scheduler.importance.hyperparameter_importance` of the study's trials, from
    the cache when these results were ranked before; a cache that cannot be read or
    written only costs the time to rank again."""
    key = results_key(store.results_digest(study_id), metric)
    path = _cache_file(store.url, study_id)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        if data["key"] == key:
            return _from_dict(data["importance"])
    result = hyperparameter_importance(store.get_trials(study_id), metric)
    entry = {"key": key, "importance": None if result is None else result.as_dict()}
    with contextlib.suppress(OSError):
        _write(path, json.dumps(entry).encode())
    return result


def results_key(digest: str, metric: str) -> str:
    """A hash of everything a ranking depends on: the results (their ``digest``), the
    objective's ``metric`` and the method."""
    method = [
        imp.REVISION,
        imp.METHOD,
        imp.MIN_TRIALS,
        imp.MAX_TRIALS,
        imp._FOLDS,
        imp._TREES,
        imp._REPEATS,
    ]
    text = json.dumps([method, metric, digest])
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_file(db_url: str, study_id: int) -> Path:
    where = hashlib.sha256(f"{db_url}\0{study_id}".encode()).hexdigest()[:32]
    return cache_dir() / f"importance-{where}.json"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600: parameters are private
            out.write(data)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _from_dict(data: dict[str, Any] | None) -> Importance | None:
    if data is None:
        return None
    return Importance(
        method=str(data["method"]),
        trials=int(data["trials"]),
        folds=int(data["folds"]),
        surrogate_r2=float(data["surrogate_r2"]),
        params=tuple(
            ParamImportance(str(p["name"]), float(p["share"]), float(p["r2_drop"]))
            for p in data["params"]
        ),
        constant=tuple(str(n) for n in data["constant"]),
        metric=str(data["metric"]),
    )
