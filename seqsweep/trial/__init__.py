"""What a trial is, shared by the worker's task and ``export``: seeds, split, fit or pack.

Nothing here imports Keras until a trial trains, so the Celery parent process
(which imports this before forking) never initialises a backend.
"""

from seqsweep.db.engine import load_pg_driver_before_keras

# Training imports Keras; on PostgreSQL over TLS psycopg must be loaded first.
load_pg_driver_before_keras()

from seqsweep.trial.train import Outcome, pack_key, study_splits, train  # noqa: E402

__all__ = ["Outcome", "pack_key", "study_splits", "train"]
