"""seqsweep: distributed hyperparameter search for Keras Sequential models on Celery.

``import seqsweep`` gives the Python API, re-exported from where it lives
(``scheduler.api``, which loads nothing until it is used)::

    report = seqsweep.launch(trials=20)
    study = seqsweep.load_study("default")
    study.trials_dataframe()

The package itself is the shared core of the three others (``scheduler`` decides,
``worker`` executes, ``models`` builds networks): settings, errors, URLs, the message
contract, the status vocabulary and the results store. Nothing in it imports
TensorFlow or Keras, nor anything of the other three; this file only re-exports.
"""

from scheduler.api import Study as Study
from scheduler.api import launch as launch
from scheduler.api import load_study as load_study
from seqsweep.version import __version__ as __version__
