"""GPU workers: ``--gpus`` pins each pool process to one GPU; a fake nvidia-smi stands in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqsweep.errors import UsageError
from seqsweep.trial.alone import gpu_name
from tests.conftest import run_cli
from tests.processes import Proc, child_env, wait_until
from worker.gpus import parse_gpus


def _fake_smi(folder: Path, indices: str) -> dict[str, str]:
    """A PATH on which ``nvidia-smi`` lists GPUs ``indices`` (nothing else is faked)."""
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{indices}'\n")
    smi.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_gpus_flag_names_all_or_some_of_the_machines_gpus() -> None:
    assert parse_gpus("all", (0, 1, 2, 3)) == (0, 1, 2, 3)
    assert parse_gpus("2, 0", (0, 1, 2, 3)) == (2, 0)
    for text, message in [
        ("0,7", "there is no GPU 7; this machine has 0, 1, 2, 3"),
        ("0,x", "'x' is not a GPU index"),
        ("1,1", "GPU 1 is named twice"),
        ("", "'' is not a GPU index"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_gpus(text, (0, 1, 2, 3))
    with pytest.raises(UsageError, match="no NVIDIA GPU found"):
        parse_gpus("all", ())


def test_device_names_the_machines_gpu_not_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert gpu_name(0) == "gpu:2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert (gpu_name(0), gpu_name(1)) == ("gpu:3", "gpu:1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_name(1) == "gpu:1"


def test_pin_comes_before_any_backend_and_cycles_through_the_gpus() -> None:
    code = (
        "import os; from worker.gpus import pin_pool_process\n"
        "print([pin_pool_process(i) for i in range(4)], os.environ['CUDA_VISIBLE_DEVICES'])\n"
        "import sys, types; sys.modules['jax'] = types.ModuleType('jax')  # as if imported\n"
        "try:\n    pin_pool_process(0)\nexcept RuntimeError as e:\n    print(e)\n"
    )
    env = child_env(SEQSWEEP_GPUS="1,3")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[1, 3, 1, 3] 3"
    assert "jax was imported before the pin" in lines[1]


@pytest.mark.parametrize(
    ("args", "gpus", "message"),
    [
        (["--gpus", "0,7"], (0, 1), "--gpus '0,7': there is no GPU 7; this machine has 0, 1"),
        (["--per-gpu", "2"], (0,), "--per-gpu needs --gpus"),
        (["--gpus", "all", "--concurrency", "2"], (0,), "--concurrency and --gpus both"),
        (["--gpus", "all", "--per-gpu", "0"], (0,), "--per-gpu: must be"),
    ],
)
def test_bad_gpu_flags_stop_the_worker_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    gpus: tuple[int, ...],
    message: str,
) -> None:
    import worker.__main__ as cli

    monkeypatch.setattr(cli, "machine_gpus", lambda: gpus)
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["--db", f"sqlite:///{tmp_path / 'r.db'}", *args])
    except SystemExit as exc:  # argparse's own errors
        code = int(str(exc.code))
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_gpus_all_without_a_gpu_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = {"PATH": "/usr/bin:/bin"}  # no nvidia-smi on this PATH, whatever the machine has
    proc = run_cli("worker", "--db", db, "--gpus", "all", cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --gpus 'all': no NVIDIA GPU found on this machine")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_each_pool_process_is_pinned_to_one_gpu(tmp_path: Path) -> None:
    env = child_env(
        SEQSWEEP_DB_URL=f"sqlite:///{tmp_path / 'r.db'}",
        SEQSWEEP_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'b.db'}",
        **_fake_smi(tmp_path / "bin", "0\\n1\\n2\\n3\\n"),
    )
    node = Proc(
        [sys.executable, "-m", "worker", "--gpus", "1,3", "--per-gpu", "2"],
        tmp_path, env, tmp_path / "node.log",
    )  # fmt: skip
    try:
        wait_until(lambda: node.output().count("pinned to GPU") >= 4 or not node.alive(), 90,
                   "four pinned pool processes")  # fmt: skip
        time.sleep(0.5)
        pins = sorted(line.split("pool process ")[1] for line in node.output().splitlines()
                      if "pinned to GPU" in line)  # fmt: skip
        assert pins == [
            "0 pinned to GPU 1", "1 pinned to GPU 3", "2 pinned to GPU 1", "3 pinned to GPU 3"
        ], node.output()[-3000:]  # fmt: skip
    finally:
        node.stop()
