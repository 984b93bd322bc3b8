"""Score model folders through `pipeline("image-classification")`: the figures the model cards report.

    python bench/score_models.py models/efficientnet-lite2 models/dinov2-vits14-probe models/ensemble           # each run's own test split
    python bench/score_models.py runs/xception --data path/to/other/images                   # any image folder
    python bench/score_models.py models/ensemble --test-split-of runs/ensemble-pool --exclude-source ciplab \
        --clean-only --predictions bench/out/ensemble-on-pool   # another run's test rows (its face boxes)

Prints, per model and then per source: accuracy, ROC-AUC, ECE, accuracy after JPEG q75 re-compression and the
pipeline's CPU ms per image (batch 1, median of 20), and at the model's own verdict thresholds (config.json)
the share of "uncertain" verdicts and how often a committed verdict (fake / real) is right. A run trained with
--crop-faces is scored on the face crops it trained on (splits.json's face boxes), as training scored it.
"""

import argparse

import csv
import os

from deepfake_detector.images import ID2LABEL
from train.data import load_sources
from train.evaluate import score_rows, test_split_rows

HEADER = (f"{'model':>24} {'images':>6} {'accuracy':>8} {'AUC':>6} {'ECE':>6} {'JPEG q75':>8} {'CPU ms':>7} "
          f"{'uncertain':>9} {'committed right':>15}")


def _verdicts(v):
    if not v:
        return f"{'–':>9} {'–':>15}"
    right = "–" if v["committed_accuracy"] is None else f"{v['committed_accuracy']:.3f}"
    return f"{v['uncertain_share']:>9.3f} {right + ' of ' + str(v['committed']):>15}"


def write_predictions(folder, rows, fake_probability):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "test_predictions.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "source", "label", "fake_probability"])
        for image, source, label, p in zip(rows["image"], rows["source"], rows["label"], fake_probability):
            writer.writerow([image["path"], source, ID2LABEL[int(label)], f"{p:.6f}"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="Model folders (or Hub ids with --data)")
    parser.add_argument("--data", nargs="+", help="Image folders to score on (default: each run's test split)")
    parser.add_argument("--test-split-of", help="Score on this run's test split (its splits.json rows and face boxes) "
                                                "instead: e.g. a smaller-pool model on a larger-pool run's test rows")
    parser.add_argument("--exclude-source", nargs="+", default=[], help="Leave these sources' rows out")
    parser.add_argument("--clean-only", action="store_true", help="Skip the JPEG q75 pass (half the time)")
    parser.add_argument("--predictions", help="Write FOLDER/test_predictions.csv (one model): what "
                                              "bench/family_figures.py reads")
    args = parser.parse_args(argv)
    if args.predictions and len(args.models) > 1:
        parser.error("--predictions takes one model")
    degradations = ("clean",) if args.clean_only else ("clean", "jpeg_q75")
    print(HEADER)
    for model in args.models:
        if args.data:
            rows = load_sources(args.data)
        else:
            rows = test_split_rows(args.test_split_of or model)
        if args.exclude_source:
            rows = rows.filter(lambda s: s not in args.exclude_source, input_columns="source")
        r = score_rows(model, rows, degradations=degradations)
        r["robustness"].setdefault("jpeg_q75", {"accuracy": float("nan")})
        if args.predictions:
            write_predictions(args.predictions, rows, r["fake_probability"])
        verdicts = r.get("verdicts") or {}
        print(f"{model:>24} {r['n']:>6} {r['accuracy']:>8.4f} {r['auc'] or float('nan'):>6.4f} {r['ece']:>6.4f} "
              f"{r['robustness']['jpeg_q75']['accuracy']:>8.4f} {r['pipeline_cpu_ms_per_image']:>7.1f} "
              f"{_verdicts(verdicts.get('overall'))}")
        for source, m in r["per_source"].items():
            print(f"{'':>24} {m['n']:>6} {m['accuracy']:>8.4f} {m['auc'] or float('nan'):>6.4f} {'':>6} {'':>8} "
                  f"{'':>7} {_verdicts((verdicts.get('per_source') or {}).get(source))}   ({source})")
        if not verdicts:
            print(f"{'':>24} no verdict_thresholds in {model}/config.json: python -m hub set-thresholds {model}")


if __name__ == "__main__":
    main()
