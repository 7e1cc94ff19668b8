"""Network builders. Importing this package imports Keras: only workers may do it.

It knows nothing of the results DB. One thing must still precede Keras here:
TensorFlow loads BoringSSL with global symbols, and libpq's first TLS handshake
in the same process then aborts (``free(): invalid pointer``,
tensorflow/tensorflow#93969) unless psycopg was loaded first. A script that
imports this package before opening a PostgreSQL store must not crash, so the
driver is loaded here, without importing seqsweep's DB layer.
"""

import contextlib

with contextlib.suppress(ImportError):  # no psycopg: no PostgreSQL either
    import psycopg  # noqa: F401

from models.sequential import build_model, build_network

__all__ = ["build_model", "build_network"]
