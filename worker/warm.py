"""Warming a pool process up in the background as it starts (``seqsweep.trial.warm``).

``launch`` starts its local workers before it writes the study, so the pool processes
import Keras and trace a tiny network while the trials are written and sent. A trial
waits for the warm-up to end before it trains: the warm-up seeds the backend's global
random state, which must not change under a trial.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("seqsweep.worker")

_done = threading.Event()
_done.set()  # a process that never started a warm-up has none to wait for


def start() -> None:
    """Warm this process up in a background thread; :func:`wait` for it to end."""
    _done.clear()
    threading.Thread(target=_warm, name="seqsweep-warm-up", daemon=True).start()


def wait() -> None:
    """Return once this process's warm-up (if any) has ended, however it ended."""
    _done.wait()


def _warm() -> None:
    started = time.perf_counter()
    try:
        from seqsweep.trial.warm import warm_up

        warm_up()
        log.info("pool process warmed up in %.1f s", time.perf_counter() - started)
    except Exception as exc:  # a failed warm-up costs only its time: the trial retries it
        log.warning("pool process warm-up failed: %s: %s", type(exc).__name__, exc)
    finally:
        _done.set()
