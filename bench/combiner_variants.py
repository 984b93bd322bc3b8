"""Ways to combine an ensemble's members, compared on the same rows: each member alone, the plain stack, the gated
stack (`train.stack --gate`; and gating the gated member's logits alone), and the plain stack fitted on the gated
member's own sources only.

    python bench/combiner_variants.py --members runs/dinov2-vits14-probe-pool-all runs/efficientnet-lite2 \\
        --splits-from runs/dinov2-vits14-probe-pool-all

The members are scored once on the run's validation and test rows exactly as train.stack scores them (the gated
ensemble's combiner inputs: every member's logits, then those logits times g, and g; the probe's
activations come from the cache train.probe filled), and kept in bench/out/ so a rerun costs seconds. Each variant
is a logistic regression over some of those columns, fitted as train.stack fits its combiner (same half of
validation, same L2), calibrated by temperature on the other half, where the 95 %-precision verdict thresholds are
chosen too. Printed per variant, on the test rows: accuracy and AUC overall, on the gated member's own sources and
on the rest; the uncertain share and how often committed verdicts are right; accuracy per own source.
"""

import argparse
import hashlib
import json
import os

import numpy as np
import torch

from deepfake_detector.models import ENSEMBLE, create_model
from train import evaluate as ev
from train.data import splits_from_run
from train.stack import combiner_input_of, fit_combiner, fit_split, member_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scored(members, splits_from, batch_size):
    """Combiner inputs and labels and sources of the validation and test rows, cached in bench/out/."""
    model = create_model(ENSEMBLE, members=members, gate=True).eval()
    layout = [members, splits_from, model.combiner.in_features]
    key = hashlib.sha1(json.dumps(layout).encode()).hexdigest()[:12]
    path = os.path.join(ROOT, "bench", "out", f"combiner-inputs-{key}.npz")
    if not os.path.isfile(path):
        splits, _, _ = splits_from_run(splits_from)
        arrays = {}
        for name in ("validation", "test"):
            scores, y = member_logits(model, splits[name], argparse.Namespace(batch_size=batch_size, num_workers=1),
                                      name)
            x = combiner_input_of(model, scores)
            arrays.update({f"{name}_x": x.numpy(), f"{name}_y": y.numpy(),
                           f"{name}_sources": np.asarray(splits[name]["source"])})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, **arrays)
    return model, dict(np.load(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", required=True, help="a feature probe folder first, then the others")
    parser.add_argument("--splits-from", required=True, help="the run whose validation and test rows score them")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--l2", type=float, default=1e-3, help="as train.stack's --l2")
    args = parser.parse_args()

    model, d = scored(args.members, args.splits_from, args.batch_size)
    gate = model.config.gates[0]
    gated = gate["member"]
    with open(os.path.join(args.members[gated], "metrics.json")) as f:
        home = json.load(f)["data"]["datasets"]
    n = len(model.members)
    columns = {f"{model.config.members[i]['name']} alone": [2 * i, 2 * i + 1] for i in range(n)}
    columns["stack"] = list(range(2 * n))
    columns["stack, gated (the gated member's logits times g, and g)"] = [*range(2 * n), 2 * n + 2 * gated,
                                                                          2 * n + 2 * gated + 1, 4 * n]
    columns["stack, gated (every member's logits times g, and g: shipped)"] = list(range(d["validation_x"].shape[1]))
    fit, rest = fit_split(d["validation_y"], d["validation_sources"], 0.5, 0)
    fit_home = fit[np.isin(d["validation_sources"][fit], home)]
    variants = [(name, cols, fit) for name, cols in columns.items()]
    variants.append((f"stack, fitted on {model.config.members[gated]['name']}'s sources only", columns["stack"],
                     fit_home))

    test_home = np.isin(d["test_sources"], home)
    g = d["test_x"][:, -1]
    print(f"{len(d['validation_y'])} validation rows (combiner fitted on {len(fit)}), {len(d['test_y'])} test rows; "
          f"gate g on test: mean {g[test_home].mean():.3f} on {model.config.members[gated]['name']}'s sources, "
          f"{g[~test_home].mean():.3f} elsewhere")
    print(f"{'variant':64s} {'all':>13s} {'own sources':>13s} {'elsewhere':>13s} {'uncertain':>9s} {'right':>6s}  "
          + " ".join(f"{s[:10]:>10s}" for s in home))
    for name, cols, rows in variants:
        combiner = torch.nn.Linear(len(cols), 2)
        torch.nn.init.zeros_(combiner.weight)
        torch.nn.init.zeros_(combiner.bias)
        x = {s: torch.as_tensor(d[f"{s}_x"][:, cols], dtype=torch.float32) for s in ("validation", "test")}
        fit_combiner(combiner, x["validation"][rows], torch.as_tensor(d["validation_y"][rows]), args.l2)
        with torch.no_grad():
            val_logits, test_logits = combiner(x["validation"][rest]).numpy(), combiner(x["test"]).numpy()
        temperature = ev.fit_temperature(val_logits, d["validation_y"][rest])
        p_val = ev.fake_probability_of(val_logits, temperature)
        p = ev.fake_probability_of(test_logits, temperature)
        thresholds = ev.choose_thresholds(d["validation_y"][rest], p_val)
        verdicts = ev.verdict_metrics(d["test_y"], p, thresholds)
        y = d["test_y"]

        def cell(mask):
            m = ev.classification_metrics(y[mask], p[mask])
            return f"{m['accuracy']:.3f} / {m['auc']:.3f}"

        per = " ".join(f"{ev.classification_metrics(y[d['test_sources'] == s], p[d['test_sources'] == s])['accuracy']:10.3f}"
                       for s in home)
        print(f"{name:64s} {cell(test_home | ~test_home):>13s} {cell(test_home):>13s} {cell(~test_home):>13s} "
              f"{verdicts['uncertain_share']:9.1%} {verdicts['committed_accuracy']:6.1%}  {per}")


if __name__ == "__main__":
    main()
