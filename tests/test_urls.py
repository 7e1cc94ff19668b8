"""URL precedence (flag, env, default) and password masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqsweep.urls import mask_url, resolve_broker_url, resolve_db_url


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
