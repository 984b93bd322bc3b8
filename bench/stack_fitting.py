"""How the stacked ensemble's combiner is fitted, compared on the same members and rows: the --fit-fraction split of
validation (half fits the combiner, half calibrates) against cross-fitting over K folds (`train.stack --folds K`:
every validation row fits it, calibration on out-of-fold scores).

    python bench/stack_fitting.py --members models/ensemble runs/NEW --splits-from models/ensemble --gate \\
        --folds 0 5 10 --leave-out runs/NEW --leave-out runs/OLD

The members' scores on validation and test come from train.stack's cache (`member_scores`: a stack run of the
same members filled it, or this fills it for that run), so each variant costs seconds. Each `--leave-out` adds the
same variants for the ensemble without the members from those runs (their combiner inputs are a subset of the
whole ensemble's: their logits, and the gates of the members kept), so members can be compared without scoring
the images once per set. Per variant, on the test rows,
as finish() computes them for a run: accuracy and AUC on all rows, the six sets' and the pool's; ECE after
temperature; the share "uncertain" at the thresholds chosen on the calibration rows and how often the committed
verdicts are right; accuracy per source for the sources named by --sources.

`--route RUN RUN` asks what two gated specialists could do on their family (`--family`): a combiner of their logits
fitted on the family's validation rows, tested with the family known, then with rows routed to it by the first
one's gate (README, "A faces140k Lite2 trained to convergence"). A saved ensemble's members load from its float16
weights, so the cache key of a stack over `models/ensemble RUN` differs from one over the shipped ensemble itself.
With `--route-members` (as train.stack's) each variant's routers are fitted out of that variant's folds; with
`--expert-members` (as train.stack's) the cross-fitted variants of the whole ensemble add its expert.
"""

import argparse
import functools
import os

import numpy as np
import torch

from deepfake_detector.modeling_deepfake_ensemble import average_of
from deepfake_detector.models import ENSEMBLE, create_model
from train import evaluate as ev
from train.cached import CACHE
from train.data import splits_from_run
from train.stack import (apply_experts, combiner_input_of, fit_combiner, fit_experts, fit_plan,
                         fit_with_calibration, gate_start, member_scores, routed_inputs, router_folds)

SIX = ["faces140k", "faces140k-extra", "ciplab", "stylegan2-thumbs", "lfw-faceswap", "sd-people"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", required=True)
    parser.add_argument("--drop-members", nargs="*", default=[])
    parser.add_argument("--splits-from", required=True, help="the run whose validation and test rows score them")
    parser.add_argument("--gate", action="store_true", help="as train.stack --gate")
    parser.add_argument("--route-members", nargs="*", default=[], help="as train.stack's")
    parser.add_argument("--router-l2", type=float, default=1e-2, help="as train.stack's")
    parser.add_argument("--expert-members", nargs="*", default=[], help="as train.stack's (cross-fitted rows only)")
    parser.add_argument("--expert-threshold", type=float, default=0.5, help="as train.stack's")
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 5], help="0 = the --fit-fraction split")
    parser.add_argument("--fit-fraction", type=float, default=0.5)
    parser.add_argument("--l2", type=float, default=1e-3, help="as train.stack's --l2")
    parser.add_argument("--leave-out", nargs="+", action="append", default=[],
                        help="also fit without the members from these runs (repeat for other sets)")
    parser.add_argument("--sources", nargs="+", default=SIX, help="sources whose test accuracy is printed")
    parser.add_argument("--route", nargs=2, metavar=("RUN", "RUN"), help="the gated members from these runs: also "
                        "fit a combiner of their logits on --family's validation rows, tested with the family known "
                        "and routed by the first one's gate (the shipped combiner elsewhere)")
    parser.add_argument("--family", nargs="+", default=["faces140k", "faces140k-extra", "faces140k-demo"])
    parser.add_argument("--cache-dir", default=CACHE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = create_model(ENSEMBLE, members=args.members, drop_members=args.drop_members, gate=args.gate,
                         route_members=args.route_members, expert_members=args.expert_members,
                         expert_threshold=args.expert_threshold).eval()
    splits, _, _ = splits_from_run(args.splits_from)
    loader_args = argparse.Namespace(batch_size=args.batch_size, num_workers=1)
    scores_val, y_val = member_scores(model, splits["validation"], loader_args, "validation", args.cache_dir)
    scores_test, y_test = member_scores(model, splits["test"], loader_args, "test", args.cache_dir)
    labels, sources = y_val.numpy(), np.asarray(splits["validation"]["source"])

    @functools.cache
    def inputs(folds):
        """The combiner's inputs on validation and test; routers fitted out of the folds train.stack would use."""
        x = routed_inputs(model, scores_val, sources, router_folds(labels, sources, folds, args.seed), args.router_l2)
        with torch.no_grad():
            return x, combiner_input_of(model, scores_test)

    x_val, x_test = inputs(max(args.folds))
    test_sources, y = np.asarray(splits["test"]["source"]), y_test.numpy()
    six = np.isin(test_sources, SIX)
    print(f"{len(model.members)} members ({', '.join(m['source'] for m in model.config.members)}); "
          f"{model.combiner.in_features} combiner inputs; {len(labels)} validation rows, {len(y)} test rows "
          f"({six.sum()} of the six sets)")
    print(f"{'variant':60s} {'all':>13s} {'six sets':>13s} {'pool':>13s} {'ECE':>6s} {'uncertain':>9s} {'right':>6s}  "
          + " ".join(f"{s[:12]:>12s}" for s in args.sources))
    for left_out in [[], *args.leave_out]:
        for folds in args.folds:
            xv, xt = inputs(folds)
            show(model, left_out, folds, xv, y_val, xt, y, sources, test_sources, args)
    if args.route:
        route(model.config, x_val, y_val, x_test, y, sources, test_sources, args)


def route(config, x_val, y_val, x_test, y, sources, test_sources, args):
    """A combiner of two gated members' logits fitted on one family's validation rows: on that family's test rows
    with the family known (an oracle), then with each test row routed to it when the first member's gate g > t."""
    n, k = len(config.members), config.num_labels
    members = [next(i for i, m in enumerate(config.members) if m["source"] == run) for run in args.route]
    gate = next(j for j, g in enumerate(config.gates) if g["member"] == members[0])
    g_val, g_test = x_val[:, gate_start(n, k, gate) + n * k], x_test[:, gate_start(n, k, gate) + n * k]
    columns = [i * k + c for i in members for c in range(k)]
    family_val, family_test = np.isin(sources, args.family), np.isin(test_sources, args.family)
    shipped = torch.nn.Linear(x_val.shape[1], k)  # as the 10-fold stack fits it: on every validation row
    torch.nn.init.zeros_(shipped.weight)
    torch.nn.init.zeros_(shipped.bias)
    fit_combiner(shipped, x_val, y_val, args.l2)

    def expert(rows):
        combiner = torch.nn.Linear(len(columns), k)
        torch.nn.init.zeros_(combiner.weight)
        torch.nn.init.zeros_(combiner.bias)
        fit_combiner(combiner, x_val[rows][:, columns], y_val[rows], args.l2)
        return combiner

    def accuracies(p, rows):
        """Accuracy per family source of `p`, P(fake) on the test rows `rows`."""
        return " ".join(f"{s} {ev.classification_metrics(y[rows][test_sources[rows] == s], p[test_sources[rows] == s])['accuracy']:.3f}"
                        for s in args.family if (test_sources[rows] == s).any())

    print(f"gate of {args.route[0]} on the family's test rows: mean {g_test[family_test].mean():.3f}")
    with torch.no_grad():
        p = ev.fake_probability_of(expert(family_val)(x_test[family_test][:, columns]).numpy())
    print(f"family known, a combiner of the two fitted on its {family_val.sum()} validation rows: "
          + accuracies(p, family_test))
    with torch.no_grad():
        base = shipped(x_test).numpy()
    for t in (0.3, 0.5, 0.7):
        routed = (g_test > t).numpy()
        logits = base.copy()
        with torch.no_grad():
            logits[routed] = expert((g_val > t).numpy())(x_test[routed][:, columns]).numpy()
        p = ev.fake_probability_of(logits)
        print(f"routed when g > {t}: {routed.sum()} test rows, {(routed & family_test).sum()} of the family's "
              f"{family_test.sum()}; all {ev.classification_metrics(y, p)['accuracy']:.3f}, "
              + accuracies(p, np.ones(len(y), bool)))


def kept_columns(config, left_out):
    """The combiner inputs of the ensemble without the members from `left_out` (combiner_input()'s layout: every
    member's logits, then per gate those logits times g, and g), and how many members are kept."""
    n, k = len(config.members), config.num_labels
    unknown = set(left_out) - {m["source"] for m in config.members}
    if unknown:
        raise SystemExit(f"--leave-out {' '.join(sorted(unknown))}: no member came from there")
    kept = [i for i, m in enumerate(config.members) if m["source"] not in left_out]
    logits = [i * k + c for i in kept for c in range(k)]
    columns = list(logits)
    for j, gate in enumerate(config.gates or []):
        start = gate_start(n, k, j)
        reads = config.routers[gate["router"]]["probes"] if "router" in gate else [gate["probe"]]
        if gate["member"] in kept and all(j in kept for j in reads):
            columns += [start + c for c in logits] + [start + n * k]
    return columns, len(kept)


def show(model, left_out, folds, x_val, y_val, x_test, y, sources, test_sources, args):
    config = model.config
    columns, n = kept_columns(config, left_out)
    x_all, x_test_all = x_val, x_test
    x_val, x_test, labels = x_val[:, columns], x_test[:, columns], y_val.numpy()
    k = config.num_labels
    combiner = torch.nn.Linear(len(columns), k)
    average_of(combiner, n, k)  # the plain average of the kept members' logits, as the ensemble's combiner starts
    fit, calibrate, fold = fit_plan(labels, sources, folds, args.fit_fraction, args.seed)
    val_logits, _ = fit_with_calibration(combiner, x_val, y_val, fit, calibrate, fold, args.l2)
    name = f"cross-fitted, {folds} folds" if folds else f"split {args.fit_fraction:g} / {1 - args.fit_fraction:g}"
    if left_out:
        name += f" without {', '.join(os.path.basename(s.rstrip('/')) for s in left_out)}"
    with torch.no_grad():
        test_logits = combiner(x_test).numpy()
    if config.experts and folds and not left_out:  # as train.stack: the expert's rows out of fold, then test
        val_logits = fit_experts(model, x_all, y_val, fold, args.l2, val_logits).numpy()
        test_logits = apply_experts(model, x_test_all, test_logits).numpy()
        name += f", expert (g > {args.expert_threshold:g})"
    temperature = ev.fit_temperature(val_logits, labels[calibrate])
    p = ev.fake_probability_of(test_logits, temperature)
    thresholds = ev.choose_thresholds(labels[calibrate], ev.fake_probability_of(val_logits, temperature))
    verdicts = ev.verdict_metrics(y, p, thresholds)

    def cell(mask):
        if not mask.any():
            return "–"
        m = ev.classification_metrics(y[mask], p[mask])
        return f"{m['accuracy']:.3f} / {m['auc']:.3f}"

    six = np.isin(test_sources, SIX)
    per = " ".join(f"{cell(test_sources == s).split(' / ')[0]:>12s}" for s in args.sources)
    print(f"{name:60s} {cell(six | ~six):>13s} {cell(six):>13s} {cell(~six):>13s} "
          f"{ev.expected_calibration_error(y, p):6.3f} {verdicts['uncertain_share']:9.1%} "
          f"{verdicts['committed_accuracy']:6.1%}  {per}")

if __name__ == "__main__":
    main()
