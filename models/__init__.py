"""Network builders. Importing this package imports Keras: only workers may do it.

It knows nothing of the results DB: the trial layer (``seqsweep.trial``) loads
what must precede Keras before it imports this.
"""

from models.sequential import build_model, build_network

__all__ = ["build_model", "build_network"]
