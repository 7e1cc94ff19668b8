"""Network builders. Importing this package imports Keras: only workers may do it."""

from seqsweep.db.engine import load_pg_driver_before_keras

load_pg_driver_before_keras()

from models.sequential import build_model  # noqa: E402

__all__ = ["build_model"]
