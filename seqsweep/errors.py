"""The error types of seqsweep.

Every error the project raises on purpose derives from :class:`SeqsweepError`,
so the CLIs can turn any of them into one line and an exit code. Two families
matter to callers:

* :class:`TrialError` — one trial went wrong. It is recorded on the trial and
  the study goes on.
* everything else — the command cannot go on. The CLI prints the message and
  exits with :attr:`SeqsweepError.exit_code`.
"""

from __future__ import annotations


class SeqsweepError(Exception):
    """Root of every error seqsweep raises on purpose."""

    exit_code = 1


class UsageError(SeqsweepError):
    """Bad input from the user: a flag, a file or a URL. Exit code 2."""

    exit_code = 2


class SpaceError(UsageError):
    """A search space that breaks a rule (unknown key, low > high, ...)."""


class DataError(UsageError):
    """A dataset that cannot be used (missing file, bad column, too few rows, ...)."""


class StudyConflictError(UsageError):
    """An existing study name reused with a different space, dataset or settings."""


class ConnectionFailedError(SeqsweepError):
    """The results DB or the broker cannot be reached. Exit code 2."""

    exit_code = 2


class StoreError(SeqsweepError):
    """The results DB refused an operation; wraps the SQLAlchemy error."""


class TrialError(SeqsweepError):
    """One trial failed; the failure is recorded and the study goes on."""


class MessageError(SeqsweepError):
    """A broker message that is not a seqsweep trial message; the worker logs and drops it."""
