"""CMA-ES state rebuilt from finished trials (``--sampler cmaes``).

Optuna's ``CmaEsSampler`` keeps what it has learned (the mean, step size and covariance
of its search distribution, pickled) in the system attributes of the trials it asks, and
counts a trial towards a generation by another system attribute. The results DB keeps
neither, and the scheduler rebuilds its Optuna study from the DB before every pick, so a
study built from plain finished trials would sit at generation 0 forever: CMA-ES would
never learn, and a relaunch could not resume what it had learned.

So the finished trials are replayed through the sampler itself: taken in trial-number
order, each run of ``popsize`` of them is one generation. After each full generation a
probe trial is asked, which makes the sampler tell the optimizer that generation and
store the updated optimizer on the probe; those attributes are carried onto the first
trial of the next generation, where the sampler looks for them, and the probe is failed.
The same finished trials in the DB always give the same distribution.
"""

from __future__ import annotations

import math
from typing import Any

#: Where ``CmaEsSampler`` (plain CMA, the only variant seqsweep uses) keeps a trial's
#: generation; ``tests/test_adaptive.py`` checks that replay still lands on it.
GENERATION_ATTR = "cma:generation"


def cma_dims(completed: list[Any]) -> dict[str, Any]:
    """The parameters CMA-ES models: numeric ranges every finished trial has.

    Choices and parameters only some trials use are sampled independently (at random),
    as Optuna does for a space whose shape changes.
    """
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.search_space import intersection_search_space

    return {
        name: dist
        for name, dist in intersection_search_space(completed).items()
        if isinstance(dist, FloatDistribution | IntDistribution) and not dist.single()
    }


def popsize(dims: int) -> int:
    """CMA-ES's default population for ``dims`` dimensions (Hansen's 4 + 3 ln n)."""
    return 4 + math.floor(3 * math.log(dims))


def replay(study: Any, completed: list[Any], dims: dict[str, Any], size: int) -> int:
    """Add ``completed`` (frozen, in trial-number order) to ``study`` as CMA-ES generations.

    Each trial keeps only the parameters in ``dims``, so every probe sees the search space
    the final pick sees: a dimension that appeared and vanished would make the sampler
    drop its optimizer. Returns the generation the next pick samples from.
    """
    import optuna
    from optuna.trial import TrialState

    carry: dict[str, Any] = {}
    chunks = [completed[i : i + size] for i in range(0, len(completed), size)]
    for generation, chunk in enumerate(chunks):
        if generation > 0:
            probe = study.ask()
            probe.relative_params  # noqa: B018  (Optuna samples, and tells, on first use)
            carry = dict(study.get_trials(deepcopy=False)[-1].system_attrs)
            study.tell(probe, state=TrialState.FAIL)
            if carry.get(GENERATION_ATTR) != generation:
                raise RuntimeError(
                    f"CmaEsSampler did not advance to generation {generation} on replay; "
                    "this Optuna keeps CMA-ES state differently"
                )
        for i, frozen in enumerate(chunk):
            attrs = {**(carry if i == 0 else {}), GENERATION_ATTR: generation}
            study.add_trial(
                optuna.trial.create_trial(
                    params={n: frozen.params[n] for n in dims},
                    distributions=dims,
                    value=frozen.value,
                    system_attrs=attrs,
                )
            )
    return len(completed) // size
