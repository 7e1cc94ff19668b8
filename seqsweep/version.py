"""The installed version of seqsweep, read from the package metadata (set in pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqsweep")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
