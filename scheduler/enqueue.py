"""Sending one Celery message per trial, by task name, over one producer connection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from seqsweep.db import StudyRecord
from seqsweep.errors import ConnectionFailedError
from seqsweep.messages import QUEUE, TASK_NAME, TrialMessage
from seqsweep.urls import mask_text, mask_url


def enqueue_trials(app: Any, study: StudyRecord, numbers: Iterable[int]) -> int:
    """Send a message for each trial number of ``study``; return how many were sent.

    The scheduler never imports the worker package: it sends the task by name. No
    time limit travels on the message: workers take the study's from the results DB
    and ignore any a message carries (anyone who can write to the broker could set one).
    """
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for number in numbers:
                app.send_task(
                    TASK_NAME,
                    args=[TrialMessage(study.id, study.name, number).to_payload()],
                    queue=QUEUE,
                    producer=producer,
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.5},
                )
                sent += 1
    except Exception as exc:  # kombu raises transport-specific errors
        reason = " ".join(mask_text(str(exc), app.conf.broker_url).split())
        reason = reason or type(exc).__name__
        raise ConnectionFailedError(
            f"broker {mask_url(app.conf.broker_url)} failed after {sent} messages: {reason}; "
            "queued trials are kept in the results DB: run the same launch again to resume"
        ) from None
    return sent
