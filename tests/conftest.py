"""Shared fixtures: tiny data files, results DBs and the real services.

Tests that need Redis or PostgreSQL skip when a developer runs without them,
but fail under CI=true: CI must never go green by skipping the real thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqsweep.db.engine import load_pg_driver_before_keras

# Test modules import Keras at collection; PostgreSQL over TLS needs psycopg first.
load_pg_driver_before_keras()

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URLS = (
    os.environ.get("SEQSWEEP_TEST_PG_URL", ""),
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
)
REDIS_URL = os.environ.get("SEQSWEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Reports (and the commands the tests start) cache importance here, not in ~/.cache."""
    from seqsweep.settings import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


def require(service: str, problem: str) -> None:
    """Fail under CI, skip elsewhere: a missing service is a broken CI machine."""
    message = f"{service} is needed for this test: {problem}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI=true: start it as .ci/run does)")
    pytest.skip(message)


def live_traces() -> tuple[int, int]:
    """TensorFlow's traced graphs that still hold operations, and the functions still
    registered in its runtime, in this process (what a model's ``fit`` leaves behind)."""
    import gc

    from tensorflow.python.eager.polymorphic_function import atomic_function

    gc.collect()
    graphs = sum(
        type(o).__name__ == "FuncGraph" and bool(o.get_operations()) for o in gc.get_objects()
    )
    return graphs, len(atomic_function.RUNTIME_FUNCTION_REFS)


def write_tiny_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """A small learnable CSV with string labels, as a user might bring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    labels = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    lines = ["f0,f1,f2,f3,f4,label"]
    lines += [
        ",".join(f"{v:.5f}" for v in row) + f",{lab}" for row, lab in zip(x, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


#: A user's own ``worker.py`` or ``models.py``: importing it leaves a marker and fails.
HOSTILE_MODULE = """\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED-" + __name__).touch()
raise ImportError(f"the caller's {__name__}.py was imported instead of seqsweep's")
"""


def create_study(
    store: Any,
    n: int = 0,
    *,
    name: str = "s",
    space: Any = None,
    settings: dict[str, Any] | None = None,
    data: Any = None,
    seed: int | None = 1,
    fresh_seed: int = 99,
    max_attempts: int | None = None,
) -> Any:
    """Write a study straight through ``store`` (no launch), with ``n`` trials sampled at
    random from ``space`` (default: the article's); returns ``(study, added numbers)``."""
    from scheduler.data import synthetic_dataset
    from scheduler.sampling import sample
    from scheduler.space import default_space
    from seqsweep.settings import StudySettings

    space = default_space() if space is None else space
    extra = {} if max_attempts is None else {"max_attempts": max_attempts}
    return store.create_study(
        name,
        seed=seed,
        fresh_seed=fresh_seed,
        space=space.to_dict(),
        settings=StudySettings(epochs=1).to_dict() if settings is None else settings,
        data=synthetic_dataset(n_rows=60) if data is None else data,
        trials=n,
        sample=lambda s, i: sample(space, s, i),
        **extra,  # the store's own default otherwise
    )


def write_hostile_modules(folder: Path) -> list[str]:
    """Give ``folder`` a ``worker.py`` and ``models.py`` of a user's project; return the names
    of the markers they leave when imported (none may appear)."""
    for name in ("worker", "models"):
        (folder / f"{name}.py").write_text(HOSTILE_MODULE)
    return ["IMPORTED-worker", "IMPORTED-models"]


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return write_tiny_csv(tmp_path / "tiny.csv")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    import sqlalchemy

    errors = []
    for url in filter(None, PG_ADMIN_URLS):
        try:
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            engine.dispose()
            return url
        except sqlalchemy.exc.OperationalError as exc:
            errors.append(str(exc).splitlines()[0])
    require("PostgreSQL on 127.0.0.1:5432", "; ".join(errors))
    raise AssertionError("unreachable")


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy

    name = f"seqsweep_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(pg_admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.flushdb()  # db 15 belongs to the tests; stale messages would leak in
    except redis.RedisError as exc:
        require("Redis on 127.0.0.1:6379", str(exc))
    finally:
        client.close()
    return REDIS_URL


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` as a user would, in ``cwd``."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        if env is None or var not in env:
            full_env.pop(var, None)
    return _run_python(["-m", *args], cwd, full_env, timeout)


def run_bench(
    script: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python bench/<script> <args>`` from the repository root, as the README does."""
    return _run_python([str(REPO / "bench" / script), *args], REPO, env, timeout)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The body rows of the Markdown tables a bench printed, by first cell (a header row
    is the one right above a ``|---`` line)."""
    lines = stdout.splitlines()
    return {
        cells[0]: cells[1:]
        for line, below in zip(lines, [*lines[1:], ""], strict=True)
        if line.startswith("| ") and not below.startswith("|---")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def _run_python(
    args: list[str], cwd: Path, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def chromium_page(allowed: str, width: int = 1300) -> Iterator[tuple[Any, list[str]]]:
    """A page in Debian's headless Chromium (driven by Playwright, no browser download)
    that may fetch only URLs starting with ``allowed``.

    Yields the page and a list that collects every problem: console errors, uncaught
    exceptions and refused requests (a CDN, fonts, anything beyond ``allowed``).
    """
    if CHROMIUM is None:
        require("Debian's chromium", "install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))

            def guard(route: Any) -> None:
                if route.request.url.startswith(allowed):
                    route.continue_()
                else:
                    problems.append(f"fetched {route.request.url}")
                    route.abort()

            page.route("**/*", guard)
            yield page, problems
        finally:
            browser.close()
