"""A user's own build function: ``launch --model mypkg.models:build``.

``build(params, n_features, n_outputs, task) -> keras.Model`` returns a compiled
model; seqsweep fits and scores it like a built-in one. The module must be importable
on every worker (installed, or on ``PYTHONPATH``). The study stores the reference and
the SHA-256 of the module's source file, so a worker with another copy fails the
trial with a line naming the file instead of training something else.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqsweep.errors import TrialError, UsageError

_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

Build = Callable[[dict[str, Any], int, int, str], Any]


def check_reference(reference: str) -> str:
    """Check ``module:function`` and find the module; return its source's SHA-256.

    Finding the module does not run it (only its parent packages' ``__init__``), so
    launch never imports Keras through a user's code.
    """
    if not _REFERENCE.match(reference):
        raise UsageError(
            f"--model {reference!r}: must be MODULE:FUNCTION, e.g. --model mypkg.models:build"
        )
    module = reference.split(":")[0]
    path = _source(module)
    if path is None:
        raise UsageError(
            f"--model {reference}: module {module} not found here; install it or put its "
            "folder on PYTHONPATH, here and on every worker"
        )
    return source_sha256(path)


def source_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_build(reference: str, sha256: str | None) -> Build:
    """The build function, after checking that this worker's module is the launch's copy."""
    module, function = reference.split(":")
    try:
        path = _source(module)
    except UsageError as exc:
        raise TrialError(str(exc)) from None
    if path is None:
        raise TrialError(
            f"--model {reference}: module {module} is not importable on this worker; "
            "install it or put its folder on PYTHONPATH"
        )
    here = source_sha256(path)
    if sha256 is not None and here != sha256:
        raise TrialError(
            f"--model {reference}: {path} differs from the launch's copy (sha256 {here[:12]} "
            f"here, {sha256[:12]} at launch); install the same version on every worker"
        )
    try:
        build = getattr(importlib.import_module(module), function)
    except AttributeError:
        raise TrialError(f"--model {reference}: {module} has no {function}") from None
    except Exception as exc:  # the user's module failed to import: that trial fails
        raise TrialError(
            f"--model {reference}: importing {module} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(build):
        raise TrialError(f"--model {reference}: {function} is not a function")
    return build  # type: ignore[no-any-return]


def build_user_model(
    reference: str, sha256: str | None, params: dict[str, Any], n_features: int,
    n_outputs: int, task: str,
) -> Any:  # fmt: skip
    """Call the user's function; its errors fail the trial with their message."""
    build = load_build(reference, sha256)
    try:
        model = build(dict(params), n_features, n_outputs, task)
    except Exception as exc:
        raise TrialError(f"--model {reference} raised {type(exc).__name__}: {exc}") from None
    if not (hasattr(model, "fit") and hasattr(model, "evaluate")):
        raise TrialError(
            f"--model {reference} returned {type(model).__name__}, not a compiled keras.Model"
        )
    if getattr(model, "optimizer", None) is None:
        raise TrialError(f"--model {reference}: the model is not compiled; call model.compile")
    return model


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:  # a parent package is missing or broken
        raise UsageError(f"--model: cannot find {module}: {exc}") from None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)
