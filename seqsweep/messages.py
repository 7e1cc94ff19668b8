"""The message contract between the scheduler and the workers: one message per trial.

A message only names a trial. Everything a worker trains it with (its parameters,
the study's seed, settings and dataset) comes from the results DB when the worker
claims the trial, so a message can be sent twice, lost or redelivered without
changing any result. The scheduler sends the task by name and never imports the
worker package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from seqsweep.errors import MessageError, UsageError
from seqsweep.settings import BOUNDS

#: The Celery task that trains one trial.
TASK_NAME = "seqsweep.run_trial"
#: The one queue every seqsweep worker consumes.
QUEUE = "seqsweep"
#: Study ids are 32-bit integer columns (PostgreSQL's ``integer``): a larger id in a
#: message would fail the query with a traceback instead of being dropped in one line.
MAX_ID = 2**31 - 1
#: A study name longer than this is not one seqsweep made (see ``check_study_name``).
MAX_NAME = 200
_STUDY_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")


def check_study_name(name: str) -> str:
    """Return ``name`` if a new study may be called so; it travels in messages and logs."""
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
        raise UsageError(
            f"--study {name!r}: use 1-{MAX_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class TrialMessage:
    """The payload of a trial's message: which trial of which study to run."""

    study_id: int
    study: str
    number: int

    def to_payload(self) -> dict[str, Any]:
        """The JSON object the message carries as its one argument."""
        return {"study_id": self.study_id, "study": self.study, "number": self.number}

    @classmethod
    def parse(cls, payload: object) -> TrialMessage:
        """Read a payload written by :meth:`to_payload`; raise MessageError otherwise."""
        if not isinstance(payload, dict):
            raise MessageError(f"payload must be a JSON object, got {type(payload).__name__}")
        study_id, number, study = (
            payload.get("study_id"),
            payload.get("number"),
            payload.get("study"),
        )
        top_number = BOUNDS["trial"].high  # trial numbers stay below --trials' bound
        for key, value, top in (("study_id", study_id, MAX_ID), ("number", number, top_number)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise MessageError(
                    f"payload {key} must be an integer in [0, {top}], got {short_repr(value)}"
                )
        # The name must be one seqsweep allows: a newline or control character here
        # would forge lines in the workers log.
        if not isinstance(study, str) or not _STUDY_NAME.fullmatch(study):
            raise MessageError(f"payload study must be a study name, got {short_repr(study)}")
        return cls(study_id=study_id, study=study, number=number)  # type: ignore[arg-type]


def short_repr(value: object) -> str:
    """``repr`` of a value from the network, cut short: it may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"
