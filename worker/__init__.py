"""Workers: the Celery app and the task that trains one trial.

``celery -A worker worker`` finds :data:`app` here. Importing this package
does not import TensorFlow; the first trial in each pool process does.
"""

from worker.celery_app import app

__all__ = ["app"]
