"""Network builders. Importing this package imports Keras: only workers may do it."""

from models.sequential import build_model

__all__ = ["build_model"]
