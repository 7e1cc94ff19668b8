"""Make issue-10 test assets with the code BEFORE issue 10 (run once, from the worktree)."""

import json
from pathlib import Path

import numpy as np
from worker.packing import run_pack
from worker.training import run_study_trial, study_splits

from scheduler.sampling import sample
from scheduler.space import default_space
from seqsweep.dataset import Dataset
from seqsweep.db import ResultStore
from seqsweep.settings import StudySettings
from worker.tasks import _train_and_record

ASSETS = Path("tests/assets")
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 4)).astype(np.float32)
y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
data = Dataset(x, y, ("no", "yes"))
space = default_space()
SEED = 20261129

# 1. pinned params and metrics of the article's space (alone and packed)
settings = StudySettings(epochs=2, batch_size=16, pack_size=8)
splits = study_splits(data, SEED, settings)
params = {n: sample(space, SEED, n) for n in range(12)}
alone = {}
for n in (0, 1, 2):
    r = run_study_trial(params[n], splits, settings, study_seed=SEED, number=n)
    alone[n] = {
        "val_loss": r.val_loss,
        "val_accuracy": r.val_accuracy,
        "test_loss": r.test_loss,
        "test_accuracy": r.test_accuracy,
    }
units = params[0]["dense_units"]
pack_numbers = [n for n in range(12) if params[n]["dense_units"] == units][:3]
outs = run_pack([params[n] for n in pack_numbers], pack_numbers, splits, settings, study_seed=SEED)
packed = {
    n: {
        "val_loss": o.val_loss,
        "val_accuracy": o.val_accuracy,
        "test_loss": o.test_loss,
        "test_accuracy": o.test_accuracy,
    }
    for n, o in zip(pack_numbers, outs, strict=True)
}
pinned = {
    "made_by": "the code before issue 10 (tests/assets/README.md)",
    "seed": SEED,
    "data": "120 rows, 4 normal features, rng 0, y = x0 + 0.5 x1 > 0",
    "settings": settings.to_dict(),
    "params": {str(n): p for n, p in params.items()},
    "alone": {str(n): m for n, m in alone.items()},
    "pack": pack_numbers,
    "packed": {str(n): m for n, m in packed.items()},
}
(ASSETS / "pinned_default_space.json").write_text(json.dumps(pinned, indent=1) + "\n")

# 2. a results DB with a small finished study
db = ASSETS / "results_before_issue10.db"
db.unlink(missing_ok=True)
store = ResultStore(f"sqlite:///{db}")
study, _ = store.create_study(
    "old",
    seed=SEED,
    fresh_seed=0,
    space=space.to_dict(),
    settings=StudySettings(epochs=1, batch_size=16, pack_size=1).to_dict(),
    data=data,
    trials=3,
    sample=lambda s, n: sample(space, s, n),
)
for n in range(3):
    c = store.claim(study.id, n, "asset-maker", lease_s=60)
    print(_train_and_record(store, [c]))
print(store.get_study("old") if hasattr(store, "get_study") else study)
