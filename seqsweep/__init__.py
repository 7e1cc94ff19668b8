"""Shared core of seqsweep: settings, errors, dataset encoding and the results store.

The three top-level packages split the work: ``scheduler`` decides, ``worker``
executes, ``models`` builds networks. Everything they must agree on lives here,
and nothing here imports TensorFlow or Keras.
"""

__version__ = "0.1.0"
