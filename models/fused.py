"""A pack's large optimizer updates as one XLA kernel each, on TensorFlow.

Keras writes an optimizer's update in ``keras.ops``: Adam's is a dozen elementwise
kernels per variable, each a pass over the variable, its gradient and its moments. For
a pack's wide hidden layers these passes cost as much as the matmuls (the README's
*What bounds each miss* has the step profile). XLA fuses one variable's update into a
single pass, but compiling it takes a fraction of a second per variable shape, which a
small variable never wins back; so only variables of at least :data:`FUSE_MIN_SIZE`
elements are fused. The JAX backend compiles the whole train step already; it and
PyTorch keep Keras' own update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras

#: The smallest variable, in elements, whose update is compiled: below it, compiling
#: costs more than a study's epochs win back (README, *Fused optimizer updates*).
FUSE_MIN_SIZE = 100_000


def fused_update(
    optimizer: Any, variable: Any, update: Callable[[Any, Any, Any], None]
) -> Callable[[Any, Any], None] | None:
    """``update(gradient, variable, learning_rate)`` for ``variable`` as one compiled
    function of (gradient, learning_rate), or None where Keras' own update should run:
    another backend, or a variable under :data:`FUSE_MIN_SIZE`.

    The function is made once per variable and kept in ``optimizer.fused_updates``, so a
    reused pack compiles nothing again; it goes with the optimizer (its graph holds no
    cycle that outlives it, unlike the train step's: tests/test_packing.py).
    """
    if keras.backend.backend() != "tensorflow" or math.prod(variable.shape) < FUSE_MIN_SIZE:
        return None
    import tensorflow as tf

    # Kept outside Keras' attribute tracking, which would wrap the dict.
    made: dict[int, Any] = optimizer.__dict__.setdefault("fused_updates", {})
    index = optimizer._get_variable_index(variable)
    if index not in made:
        made[index] = tf.function(
            lambda gradient, rate: update(gradient, variable, rate),
            jit_compile=True,
            autograph=False,
        )
    fused: Callable[[Any, Any], None] = made[index]
    return fused
