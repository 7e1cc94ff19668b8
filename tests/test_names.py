"""Names a user meets: console scripts, --version, --study everywhere, and no shadowing.

seqsweep installs generic top-level packages (``scheduler``, ``worker``, ``models``); a
user's project may hold a ``worker.py`` or ``models.py`` of its own, and must never get
it imported by seqsweep's local workers.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from scheduler.cli import main as scheduler_main
from seqsweep.db import ResultStore
from tests.conftest import REPO, write_hostile_modules, write_tiny_csv
from tests.test_store import _create
from worker.__main__ import main as worker_main

TINY_LAUNCH = [
    "launch", "--trials", "2", "--local-workers", "1", "--epochs", "1", "--batch-size", "16",
    "--data", "tiny.csv", "--target", "label", "--seed", "3", "--format", "json",
]  # fmt: skip


def test_console_scripts_are_declared_for_both_commands() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"seqsweep": "scheduler.cli:main", "seqsweep-worker": "worker.__main__:main"}


@pytest.mark.parametrize("main", [scheduler_main, worker_main], ids=["seqsweep", "worker"])
def test_version_comes_from_the_package_metadata(
    main: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])  # type: ignore[operator]
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"seqsweep {version('seqsweep')}\n"


def test_status_and_cancel_take_the_study_as_a_flag_or_positionally(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ResultStore(sqlite_url)
    _create(store, 2, name="a")
    _create(store, 2, name="b")
    for args in (["status", "a"], ["status", "--study", "a"], ["status", "a", "--study", "a"]):
        assert scheduler_main([*args, "--db", sqlite_url, "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["study"] == "a"

    with pytest.raises(SystemExit, match="2"):
        scheduler_main(["status", "a", "--study", "b", "--db", sqlite_url])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "seqsweep: error: the study is named twice, 'a' and --study 'b'; give one of them "
        "(see --help)"
    ]
    with pytest.raises(SystemExit, match="2"):
        scheduler_main(["cancel", "--db", sqlite_url])
    assert "cancel needs the study to stop" in capsys.readouterr().err

    assert scheduler_main(["cancel", "--study", "a", "--db", sqlite_url]) == 0
    assert scheduler_main(["cancel", "b", "--db", sqlite_url]) == 0
    assert [s.status for s in store.list_studies()] == ["cancelled", "cancelled"]


def test_the_hostile_modules_are_what_plain_python_imports_there(tmp_path: Path) -> None:
    """The control for the launches from a user's project folder (here and in
    tests/test_integration.py): without isolation, these files shadow seqsweep's."""
    for marker in write_hostile_modules(tmp_path):
        name = marker.removeprefix("IMPORTED-")
        shown = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, check=False
        )
        assert shown.returncode != 0 and (tmp_path / marker).exists()


@pytest.mark.integration
@pytest.mark.slow
def test_pip_install_gives_console_scripts_that_work_in_a_hostile_folder(tmp_path: Path) -> None:
    """``pip install .`` into a fresh venv, then ``seqsweep launch`` from the user's project.

    The venv sees the machine's packages (TensorFlow is not installed twice) and gets this
    checkout as a real, non-editable install; PYTHONPATH is unset, so the console scripts
    and the local workers run the installed copy.
    """
    source = tmp_path / "source"
    for name in ("scheduler", "worker", "models", "seqsweep"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv = tmp_path / "venv"
    # No pip or setuptools of the venv's own: this machine's pip and setuptools build it,
    # offline (the dev extra pins a setuptools that reads pyproject.toml's license).
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    if sys.prefix != sys.base_prefix:  # this Python is a venv: lend the new one its packages
        [lib] = (venv / "lib").glob("python3*")
        (lib / "site-packages" / "outer.pth").write_text("\n".join(site.getsitepackages()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "SEQSWEEP_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q",
         "--no-deps", "--no-index", "--no-build-isolation", str(source)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        [venv / "bin/python", "-c", "import scheduler; print(scheduler.__file__)"],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), "the test must run the installed copy"
    for script in ("seqsweep", "seqsweep-worker"):
        shown = subprocess.run(
            [venv / "bin" / script, "--version"], env=env, capture_output=True, text=True
        )
        assert shown.stdout == f"seqsweep {version('seqsweep')}\n", shown.stderr

    home = tmp_path / "project"
    home.mkdir()
    write_tiny_csv(home / "tiny.csv")
    markers = write_hostile_modules(home)
    proc = subprocess.run(
        [venv / "bin/seqsweep", *TINY_LAUNCH],
        cwd=home, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log = (home / "seqsweep-workers.log").read_text(errors="replace")
    assert proc.returncode == 0, proc.stderr[-2000:] + log[-3000:]
    assert json.loads(proc.stdout)["counts"]["succeeded"] == 2
    assert not any((home / m).exists() for m in markers), "the user's modules were imported"
