"""GPU workers: each pool process sees one GPU, chosen by its pool index.

``python -m worker --gpus all`` (or ``--gpus 0,2``, with ``--per-gpu K``) runs K pool
processes per GPU. The node puts the list into ``$SEQSWEEP_GPUS`` before Celery forks;
each pool process, as it starts and before it imports any backend, sets
``CUDA_VISIBLE_DEVICES`` to one index of it, so TensorFlow, JAX and PyTorch all see
one GPU there, as their device 0. A recycled pool process keeps its index, so its
replacement gets the same GPU. The index is the one ``nvidia-smi`` shows
(``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's own default order puts the fastest first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from seqsweep.errors import UsageError
from seqsweep.settings import GPUS_ENV, short_value

_BACKENDS = ("keras", "tensorflow", "jax", "torch")


def machine_gpus() -> tuple[int, ...]:
    """The indices of this machine's NVIDIA GPUs, as ``nvidia-smi`` lists them; none
    without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def parse_gpus(text: str, available: tuple[int, ...]) -> tuple[int, ...]:
    """The GPU indices ``--gpus`` names: ``all``, or a comma-separated list of ``available``."""
    flag = f"--gpus {short_value(text)}"
    if not available:
        raise UsageError(
            f"{flag}: no NVIDIA GPU found on this machine (nvidia-smi is missing or lists "
            "none); run without --gpus to train on the CPU"
        )
    if text.strip() == "all":
        return available
    known = ", ".join(map(str, available))
    gpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(
                f"{flag}: {short_value(part)} is not a GPU index; use all or "
                f"indices such as 0,2 (this machine has {known})"
            )
        if int(part) not in available:
            raise UsageError(f"{flag}: there is no GPU {int(part)}; this machine has {known}")
        if int(part) in gpus:
            raise UsageError(f"{flag}: GPU {int(part)} is named twice; name each once")
        gpus.append(int(part))
    return tuple(gpus)


def share_gpus(gpus: tuple[int, ...]) -> None:
    """Hand ``gpus`` to the pool processes about to be forked (see :func:`pin_pool_process`)."""
    os.environ[GPUS_ENV] = ",".join(map(str, gpus))


def pin_pool_process(index: int) -> int | None:
    """Show pool process ``index`` its one GPU; return that GPU's index, or None (no ``--gpus``).

    Must run before the process imports a backend, which reads ``CUDA_VISIBLE_DEVICES``
    once; a backend already loaded would train on whatever it saw, so that is an error.
    """
    text = os.environ.get(GPUS_ENV, "").strip()
    if not text:
        return None
    loaded = [name for name in _BACKENDS if name in sys.modules]
    if loaded:
        raise RuntimeError(f"cannot pin a GPU: {', '.join(loaded)} was imported before the pin")
    gpus = [int(g) for g in text.split(",")]
    gpu = gpus[index % len(gpus)]
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu
