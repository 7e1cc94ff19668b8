"""URL precedence (flag, env, default) and password masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqsweep.urls import mask_text, mask_url, resolve_broker_url, resolve_db_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/x", "postgresql+psycopg://bob:***@db:5432/x"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "rediss://user:s3cret@cache/0?ssl_cert_reqs=none",
            "rediss://user:***@cache/0?ssl_cert_reqs=none",
        ),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)


def test_flag_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSWEEP_DB_URL", "postgresql://env/db")
    monkeypatch.setenv("SEQSWEEP_BROKER_URL", "redis://env:6379/0")
    assert resolve_db_url("postgresql://flag/db") == "postgresql://flag/db"
    assert resolve_db_url(None) == "postgresql://env/db"
    assert resolve_broker_url(None) == "redis://env:6379/0"


def test_defaults_are_embedded_and_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SEQSWEEP_DB_URL", raising=False)
    monkeypatch.delenv("SEQSWEEP_BROKER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'seqsweep.db'}"
    assert resolve_broker_url(None) == f"sqla+sqlite:///{tmp_path / 'seqsweep-broker.db'}"


#: Every character RFC 3986 reserves, and '%', between words that must never be printed.
RESERVED_PASSWORD = "Alpha@Bravo/Charlie?Delta#Echo[Fox]Golf:Hotel!$&'()*+,;=%Kilo"
SECRET_WORDS = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Fox", "Golf", "Hotel", "Kilo")


@pytest.mark.parametrize(
    "template",
    [
        "postgresql+psycopg://root:{}@127.0.0.1:5432/test",
        "postgresql://root:{}@[::1]:5432/test?sslmode=require",
        "redis://:{}@127.0.0.1:6379/0",
        "rediss://user:{}@cache/0?ssl_cert_reqs=none",
        "amqp://u:{}@127.0.0.1:1//",
        "sqlite://user:{}@/x.db",
        "sqla+postgresql://u:{}@h/db",
    ],
)
@pytest.mark.parametrize(
    "password",
    [
        "hunter#2",
        RESERVED_PASSWORD,
        *[f"Alpha{c}Kilo" for c in ":/?#[]@!$&'()*+,;=%"],
        "Alpha%40Kilo",  # percent-encoded: both forms are secret
        "Alpha Kilo",
    ],
)
def test_mask_url_hides_every_reserved_character_password(template: str, password: str) -> None:
    url = template.format(password)
    masked = mask_url(url)
    assert "***" in masked
    for word in SECRET_WORDS:
        if word in password:
            assert word not in masked, (url, masked)
    assert "hunter" not in masked
    # The error text of a driver that echoes the password, or the whole URL, is masked too.
    echoed = mask_text(f"connect to {url} failed: bad password {password!r}; {password}", url)
    for word in SECRET_WORDS:
        if word in password:
            assert word not in echoed, (url, echoed)


def test_mask_url_keeps_urls_without_a_password() -> None:
    for url in ("redis://cache:6379/0", "sqlite:///a@b.db", "postgresql://bob@h/x", "x"):
        assert mask_url(url) == url


def test_a_password_flag_is_moved_into_the_environment_and_argv_rewritten(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import sys

    from seqsweep import cli_support

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setattr(sys, "orig_argv", ["python", "-P", "-m", "worker", "x"])
    monkeypatch.delenv("SEQSWEEP_DB_URL", raising=False)
    monkeypatch.delenv("SEQSWEEP_BROKER_URL", raising=False)
    cli_support.hide_passwords_from_ps(["--db", "sqlite:///r.db", "--concurrency", "2"])
    assert calls == []  # no password: nothing to hide
    args = ["--broker=redis://:pw#1@h:6379/0", "--db", "postgresql://u:pw@h/x", "--db"]
    monkeypatch.setattr(sys, "orig_argv", ["python", "-P", "-m", "worker", *args])
    cli_support.hide_passwords_from_ps(args)
    assert calls == [(sys.executable, ["python", "-P", "-m", "worker", "--db"])]
    assert os.environ["SEQSWEEP_BROKER_URL"] == "redis://:pw#1@h:6379/0"
    assert os.environ["SEQSWEEP_DB_URL"] == "postgresql://u:pw@h/x"
    err = capsys.readouterr().err
    assert err.startswith("warning: a password in --db and --broker shows in `ps`")
    assert "pw" not in err
