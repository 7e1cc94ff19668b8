"""docker-compose.yml: the services the README promises, and a client-side config check."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


def test_services_and_secrets() -> None:
    config = yaml.safe_load(COMPOSE.read_text())
    assert "version" not in config  # obsolete in the Compose spec
    services = config["services"]
    assert {"redis", "postgres", "worker", "scheduler"} <= set(services)
    for name in ("worker", "scheduler"):
        env = services[name]["environment"]
        assert env["SEQSWEEP_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["SEQSWEEP_DB_URL"].startswith("postgresql+psycopg://")
        # URLs travel in the environment, never in argv where `ps` shows them.
        assert not any("://" in str(arg) for arg in services[name]["command"])
    launch = services["scheduler"]["command"]
    assert launch[:4] == ["python", "-m", "scheduler", "launch"]
    assert launch[launch.index("--local-workers") + 1] == "0"
    assert services["scheduler"]["restart"] == "no"


def test_gpu_worker_profile_reserves_the_gpus_and_pins_them() -> None:
    gpu = yaml.safe_load(COMPOSE.read_text())["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # a plain `up` starts no GPU worker
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    command = gpu["command"]
    assert command[:3] == ["python", "-m", "worker"]
    assert command[command.index("--gpus") + 1] == "${WORKER_GPUS:-all}"
    assert gpu["environment"]["SEQSWEEP_BROKER_URL"].startswith("redis://redis:6379/")
    assert not any("://" in str(arg) for arg in command)


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_is_valid() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no Compose client (docker compose or docker-compose) on this machine")
    for extra in ([], ["--profile", "scheduler"], ["--profile", "gpu"]):
        proc = subprocess.run(
            [*client, *extra, "config", "-q"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
