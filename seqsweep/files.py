"""Files seqsweep writes and reads, made safe against other users of a shared folder.

What seqsweep writes (results DB, broker file, workers log, HTML report) may hold
the whole dataset or a study's details, so it is created private (0600, or stricter
where the umask says so). A file written whole goes through a fresh, unpredictable
temporary file in the target folder and ``os.replace``, so a symlink planted at a
predictable name is never followed; a log is opened with ``O_NOFOLLOW``. What
seqsweep reads from the user (space and data files) must be a regular file of
bounded size: a FIFO or device would block or never end.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from seqsweep.errors import UsageError

#: Mode of every file seqsweep creates; the umask may only make it stricter.
PRIVATE_MODE = 0o600


def write_private(path: Path, data: bytes, flag: str) -> Path:
    """Write ``data`` to ``path`` whole (all or nothing), as a private file.

    ``flag`` names the option that gave ``path``, for the one-line error.
    """
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name inside it")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: folder {folder} does not exist; create it first")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot write there ({exc.strerror}); pick a folder you can write to"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600 and O_EXCL
            out.write(data)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise UsageError(
            f"{flag} {path}: cannot write ({exc.strerror}); pick a file in a folder you can "
            "write to"
        ) from None
    return path


def check_writable_target(path: Path, flag: str) -> None:
    """Refuse, before any work, an output path that :func:`write_private` could not write."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name inside it")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: folder {folder} is not writable; pick another")


def open_log(path: Path) -> int:
    """Open (or create, private) a log for appending; never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, PRIVATE_MODE)
    except OSError as exc:
        why = "it is a symlink" if exc.errno == 40 else exc.strerror  # ELOOP
        raise UsageError(
            f"log file {path}: cannot open it ({why}); pick a file in a folder you can write to"
        ) from None


def create_private(path: Path) -> None:
    """Create ``path`` empty and private unless it exists, so a tool that creates it next
    (SQLite) does not make it world-readable; its journal files take its mode.

    Best effort: a missing or unwritable folder is left for that tool to report, in one
    line of its own, when it opens the file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(OSError):  # FileExistsError included: it keeps its mode
        os.close(os.open(path, flags, PRIVATE_MODE))


def read_input(path: Path, flag: str, max_bytes: int, where: str | None = None) -> bytes:
    """Read a user's input file (given as ``flag``): a regular file of at most ``max_bytes``.

    Errors start with ``where`` (default: the flag and the path).

    Opened non-blocking and checked on the open descriptor, so a FIFO (or a file
    swapped for one after a check) is refused instead of blocking forever.
    """
    where = where or f"{flag} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{where}: not found; check the path given to {flag}") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise UsageError(f"{where}: is {kind}; give a regular file")
        if info.st_size > max_bytes:
            raise UsageError(
                f"{where}: {info.st_size} bytes, more than the {max_bytes} bytes allowed"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read it
        raise UsageError(f"{where}: more than the {max_bytes} bytes allowed")
    return data
