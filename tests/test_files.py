"""Files seqsweep creates are private, never written through a planted symlink, and
files it reads must be regular and bounded."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scheduler.cli import main
from seqsweep.broker import make_app, prepare_sqlite_broker
from seqsweep.db import ResultStore
from seqsweep.errors import UsageError
from seqsweep.files import open_log, read_input, write_private
from tests.test_report_html import _study


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_results_db_broker_file_and_log_are_created_private(tmp_path: Path, umask: int) -> None:
    with _umask(umask):
        ResultStore(f"sqlite:///{tmp_path / 'r.db'}").dispose()
        broker = tmp_path / "b.db"
        prepare_sqlite_broker(make_app(f"sqla+sqlite:///{broker}"), broker)
        os.close(open_log(tmp_path / "w.log"))
    for name in ("r.db", "b.db", "w.log"):
        assert _mode(tmp_path / name) == 0o600, name
    for extra in tmp_path.glob("*-wal"):  # SQLite gives its journals the file's mode
        assert _mode(extra) == 0o600, extra.name


def test_a_log_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "w.log").symlink_to(victim)
    with pytest.raises(UsageError, match="symlink"):
        open_log(tmp_path / "w.log")
    assert victim.read_text() == "precious\n"


def test_html_report_replaces_a_planted_symlink_instead_of_following_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _study(url, 10).dispose()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # Both the page's name and the old predictable ".NAME.part" point at the victim.
    (tmp_path / "page.html").symlink_to(victim)
    (tmp_path / ".page.html.part").symlink_to(victim)
    html = str(tmp_path / "page.html")
    assert main(["report", "--db", url, "--study", "html", "--html", html]) == 0
    assert victim.read_text() == "precious\n"
    page = tmp_path / "page.html"
    assert not page.is_symlink() and page.read_text().startswith("<!DOCTYPE html>")
    assert _mode(page) == 0o600
    # No temporary file is left behind (the planted link is the only dot-file).
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".page.html.part"]


def test_write_private_into_a_folder_or_nowhere_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        write_private(tmp_path, b"x", "--out")
    with pytest.raises(UsageError, match="does not exist"):
        write_private(tmp_path / "missing" / "f", b"x", "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "space.yaml"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def read() -> None:
        try:
            read_input(fifo, "--space", 1024)
        except UsageError as exc:
            done.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock it: a writer end makes the open return
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert done and "not a regular file" in str(done[0])


def test_input_files_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    with pytest.raises(UsageError, match="more than the 1000 bytes"):
        read_input(big, "--space", 1000)
    assert read_input(big, "--space", 2000) == b"#" * 2000
    with pytest.raises(UsageError, match="is a folder"):
        read_input(tmp_path, "--data", 1000)
