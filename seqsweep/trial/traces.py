"""Free what TensorFlow keeps of a model's traced steps once the model is done with.

Every new model's ``fit`` traces its train and test steps into graphs. TensorFlow 2.21's
graphs hold their operations from C++, where Python's garbage collector cannot see the
cycle, so a graph and the functions registered for it (its ``cond`` branches: metrics,
optimizer) outlive the model; ``keras.backend.clear_session()`` frees none of it. The
README's *Memory* section has the measurements. Dismantling the graphs breaks the cycle.
The JAX and PyTorch backends keep nothing, and nothing here touches them.
"""

from __future__ import annotations

from typing import Any


def release_traces(model: Any) -> None:
    """Dismantle the graphs of ``model``'s traced train, test and predict steps.

    Only for a model that will never train, evaluate or predict again in this process
    (Keras would trace anew, but the next call should not find half a graph). Does
    nothing on other backends, or where TensorFlow's internals are not where this
    version of them keeps them.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    from tensorflow.python.framework import func_graph

    dismantle = getattr(func_graph, "dismantle_func_graph", None)
    if dismantle is None:
        return
    for name in ("train_function", "test_function", "predict_function"):
        step = getattr(model, name, None)
        for function in _traced_functions(step):
            for concrete in function._list_all_concrete_functions():
                dismantle(concrete.graph)
        if step is not None:
            setattr(model, name, None)


def _traced_functions(step: Any) -> list[Any]:
    """The ``tf.function``s Keras' trainer closes its step over (the multi-step loop and
    the one-step function, which it wraps with ``functools.wraps``)."""
    found = []
    for cell in getattr(step, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not yet filled
            continue
        value = getattr(value, "__wrapped__", value)
        if hasattr(value, "_list_all_concrete_functions"):
            found.append(value)
    return found
