"""Where a pack's training time goes, kernel by kernel: TensorFlow's profiler on one pack.

    python bench/step_profile.py                        # the study's widest pack
    python bench/step_profile.py --units 128 --members 16

Trains one pack of ``--members`` networks of ``--units`` (the article's two layers) on
the data of bench/throughput.py, on one thread as a worker process does, after a pack
of the same shape has warmed the process up. The profiled pack runs under
``tf.profiler``; its trace is read back and every kernel that ran is summed by kind:
the matmuls (forward and backward), dropout (the random draw and the masking), the
optimizer's update (Adam: a dozen elementwise kernels per variable, or one XLA kernel
for a variable ``models.fused`` compiles), XLA's compiling, and the rest (activations,
biases, loss, metrics). The matmuls' rate is their FLOPs
(``seqsweep.trial.cost.trial_flops``) over their kernel time, beside the rate of the
same batched matmul timed alone. TensorFlow only: its profiler is what reads the kernels.
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np
from common import ROWS, SEED, best_rate, machine, one_thread, table

one_thread()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--members", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench/step_profile.py: needs KERAS_BACKEND=tensorflow (its profiler)")
    import tensorflow as tf

    from scheduler.data import synthetic_dataset
    from seqsweep.dataset import split_dataset
    from seqsweep.settings import StudySettings
    from seqsweep.trial.cost import DataShape, trial_flops
    from seqsweep.trial.packed import run_pack

    splits = split_dataset(synthetic_dataset(n_rows=ROWS), SEED, 0.2, 0.2)
    settings = StudySettings(epochs=args.epochs, batch_size=32, pack_size=args.members)
    members = [
        {
            "dense_units": args.units,
            "dropout_rate1": 0.05 + 0.4 * k / args.members,
            "dropout_rate2": 0.3,
            "learning_rate": 1e-3 * (1 + k),
        }
        for k in range(args.members)
    ]
    numbers = list(range(args.members))
    run_pack(members, numbers, splits, settings, study_seed=SEED)  # warm-up, same shape
    with tempfile.TemporaryDirectory(prefix="seqsweep-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        run_pack(members, numbers, splits, settings, study_seed=SEED + 1)
        wall = time.perf_counter() - started
        tf.profiler.experimental.stop()
        kinds, ops = _kernel_seconds(glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")[0])

    shape = DataShape.of_splits(splits)
    flops = sum(trial_flops(m, settings, shape) for m in members)
    busy = sum(seconds for seconds, _ in kinds.values())
    rows = [
        [kind, f"{seconds:.3f}", f"{seconds / busy:.1%}", calls]
        for kind, (seconds, calls) in sorted(kinds.items(), key=lambda kv: -kv[1][0])
    ]
    rows.append(["all kernels", f"{busy:.3f}", "100.0%", sum(c for _, c in kinds.values())])
    rows.append(["outside kernels (Python, Keras, data)", f"{wall - busy:.3f}", "", ""])
    print(
        f"one pack of {args.members} x {args.units} units, {args.epochs} epoch(s), batch 32, "
        f"one thread; {machine()}; wall {wall:.2f} s"
    )
    print(table(["kernels", "seconds", "of kernel time", "calls"], rows))
    print()
    print(table(["kernel", "seconds", "calls"], [[k, f"{s:.3f}", c] for k, (s, c) in ops]))
    matmul = kinds["matmul"][0]
    k, u = args.members, args.units
    alone = _matmul_rate(tf, (k, 32, u), (k, u, u))
    square = _matmul_rate(tf, (2048, 2048), (2048, 2048))
    print()
    print(
        f"matmul kernels: {flops / 1e9:.1f} GFLOP in {matmul:.2f} s = "
        f"{flops / matmul / 1e9:.1f} GFLOP/s. On this thread, timed alone: the pack's "
        f"hidden layer ({k} x [32, {u}] @ [{u}, {u}]) {alone / 1e9:.1f} GFLOP/s, "
        f"a 2048 x 2048 square one {square / 1e9:.1f} GFLOP/s"
    )


def _kind(scope: str, op: str) -> str:
    """Which part of the step a kernel belongs to, from its name scope and type."""
    if "MatMul" in op:
        return "matmul"
    if scope.startswith("CpuExecutable"):  # XLA runs only the fused updates (models.fused)
        return "optimizer"
    if op in ("Compile", "CompileCpuExecutable", "RunBackend"):
        return "XLA compile"
    if "packed_dropout" in scope:
        return "dropout"
    if "/packed/" in scope and "packed_model" not in scope:  # the optimizer's own scope
        return "optimizer"
    return "other"


def _kernel_seconds(path: str) -> tuple[dict[str, tuple[float, int]], list[Any]]:
    """Kernel seconds and calls by kind, and the ten costliest kernel types, from a trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    by_op: Counter[str] = Counter()
    op_calls: Counter[str] = Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):  # the threads that run kernels
            continue
        for event in line.events:
            name = plane.event_metadata[event.metadata_id].name
            if ":" not in name or name.startswith("ExecutorState"):  # not a kernel
                continue
            scope, op = name.rsplit(":", 1)
            kind, duration = _kind(scope, op), event.duration_ps / 1e12
            seconds[kind] += duration
            calls[kind] += 1
            by_op[f"{kind}: {op}"] += duration
            op_calls[f"{kind}: {op}"] += 1
    kinds = {kind: (seconds[kind], calls[kind]) for kind in seconds}
    return kinds, [(op, (s, op_calls[op])) for op, s in by_op.most_common(10)]


def _matmul_rate(tf: Any, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> float:
    """FLOP/s of one TensorFlow matmul of these shapes on this thread (``best_rate``)."""
    a, b = tf.random.normal(shape_a), tf.random.normal(shape_b)
    step = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    step()
    return best_rate(lambda: step().numpy(), 2 * int(np.prod(shape_a)) * shape_b[-1])


if __name__ == "__main__":
    main()
