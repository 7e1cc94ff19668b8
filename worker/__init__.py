"""Workers: the Celery app and the task that trains one trial.

``celery -A worker worker`` finds :data:`app` here. Importing this package
does not import TensorFlow; the first trial in each pool process does.
"""

from seqsweep.db.engine import load_pg_driver_before_keras

load_pg_driver_before_keras()

from worker.celery_app import app  # noqa: E402

__all__ = ["app"]
