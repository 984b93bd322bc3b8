"""Test figures per generator family and per real collection, from trained runs' test predictions.

    python bench/family_figures.py runs/dinov2-vits14-probe-pool runs/ensemble-pool

A run's test_predictions.csv holds each test image's P(fake); the family of a fake and the collection of a real
come from its source's source.json (sources built by `python -m train.sources`) or, for the ../shared/data sets,
train.data.SHARED_GROUPS. Per fake family: how many test fakes, the share caught at P(fake) >= 0.5, and the AUC of
those fakes against every real of the test split (can the model rank this family's fakes above reals?). Per real
collection: the share called real at 0.5. First, accuracy and AUC over all test rows, the six ../shared/data
sets' rows and the pool's. Runs listed together are compared on the same rows where they were
tested on the same split (`--splits-from`).
"""

import argparse
import csv
import os

import numpy as np
from sklearn.metrics import roc_auc_score

from train.data import SHARED_GROUPS, groups_of

FAKE, REAL = "fake", "real"


def read_predictions(run):
    path = os.path.join(run, "test_predictions.csv")
    if not os.path.isfile(path):
        raise SystemExit(f"family_figures: error: {run} has no test_predictions.csv: pass a folder written by python -m train.")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    groups = groups_of([row["file"] for row in rows], [row["source"] for row in rows],
                       [0 if row["label"] == FAKE else 1 for row in rows])
    return {"group": np.array(groups), "label": np.array([row["label"] for row in rows]),
            "p": np.array([float(row["fake_probability"]) for row in rows]),
            "shared": np.array([row["source"] in SHARED_GROUPS for row in rows])}


def overall(pred):
    """Accuracy at 0.5 and AUC over all test rows, the ../shared/data sets' rows and the pool's rows."""
    out = {}
    for name, m in (("all", np.ones(len(pred["p"]), bool)), ("six shared sets", pred["shared"]),
                    ("pool sources", ~pred["shared"])):
        if m.any():
            fake = pred["label"][m] == FAKE
            out[name] = (int(m.sum()), float(((pred["p"][m] >= 0.5) == fake).mean()),
                         roc_auc_score(fake, pred["p"][m]) if 0 < fake.sum() < m.sum() else float("nan"))
    return out


def figures(pred):
    fake, real = pred["label"] == FAKE, pred["label"] == REAL
    out = {}
    for group in sorted(set(pred["group"][fake])):
        m = fake & (pred["group"] == group)
        y = np.concatenate([np.ones(m.sum()), np.zeros(real.sum())])
        auc = roc_auc_score(y, np.concatenate([pred["p"][m], pred["p"][real]])) if real.any() else float("nan")
        out[(FAKE, group)] = (int(m.sum()), float((pred["p"][m] >= 0.5).mean()), auc)
    for group in sorted(set(pred["group"][real])):
        m = real & (pred["group"] == group)
        out[(REAL, group)] = (int(m.sum()), float((pred["p"][m] < 0.5).mean()), None)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="Run folders (with test_predictions.csv)")
    args = parser.parse_args(argv)
    predictions = {run: read_predictions(run) for run in args.runs}
    table = {run: figures(p) for run, p in predictions.items()}
    names = [os.path.basename(os.path.normpath(run)) for run in args.runs]
    print(f"{'test rows':>28} | " + " | ".join(f"{n[:26]:>26}" for n in names) + "   (accuracy at 0.5 (AUC))")
    totals = {run: overall(p) for run, p in predictions.items()}
    for part in ("all", "six shared sets", "pool sources"):
        cells = [f"{t[part][0]:>5}  {t[part][1]:.3f} ({t[part][2]:.3f})" if part in t else "" for t in totals.values()]
        print(f"{part:>28} | " + " | ".join(f"{c:>26}" for c in cells))
    for kind, what in ((FAKE, "fakes caught at 0.5 (AUC against all test reals)"), (REAL, "reals called real at 0.5")):
        keys = sorted({key for t in table.values() for key in t if key[0] == kind}, key=lambda k: k[1].lower())
        print(f"\n{'fake family' if kind == FAKE else 'real collection':>28} | " + " | ".join(f"{n[:26]:>26}" for n in names)
              + f"   ({what})")
        for key in keys:
            cells = []
            for run in args.runs:
                n, share, auc = table[run].get(key, (0, float("nan"), None))
                cells.append(f"{n:>5}  {share:.3f}" + (f" ({auc:.3f})" if auc is not None else "        ") if n else "")
            print(f"{key[1][:28]:>28} | " + " | ".join(f"{c:>26}" for c in cells))
    for run in args.runs:
        aucs = [auc for (kind, _), (_, _, auc) in table[run].items() if kind == FAKE and not np.isnan(auc)]
        print(f"{os.path.basename(os.path.normpath(run))}: lowest family AUC {min(aucs):.3f}, mean {np.mean(aucs):.3f} "
              f"over {len(aucs)} families")


if __name__ == "__main__":
    main()
