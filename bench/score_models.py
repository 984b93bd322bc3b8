"""Score model folders through `pipeline("image-classification")`: the figures the model cards report.

    python bench/score_models.py models/tuned-cnn models/xception models/ensemble            # each run's own test split
    python bench/score_models.py models/xception --data path/to/other/images                 # any image folder

Prints accuracy, ROC-AUC, ECE, accuracy after JPEG q75 re-compression and the pipeline's CPU ms per image
(batch 1, median of 20), per model, plus accuracy per source.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.evaluate import score_folder, score_rows, test_split_rows  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="Model folders (or Hub ids with --data)")
    parser.add_argument("--data", nargs="+", help="Image folders to score on (default: each run's test split)")
    args = parser.parse_args()
    print(f"{'model':>24} {'images':>6} {'accuracy':>8} {'AUC':>6} {'ECE':>6} {'JPEG q75':>8} {'CPU ms':>7}")
    for model in args.models:
        if args.data:
            r = score_folder(model, args.data)
        else:
            r = score_rows(model, test_split_rows(model))
        print(f"{model:>24} {r['n']:>6} {r['accuracy']:>8.4f} {r['auc']:>6.4f} {r['ece']:>6.4f} "
              f"{r['robustness']['jpeg_q75']['accuracy']:>8.4f} {r['pipeline_cpu_ms_per_image']:>7.1f}")
        for source, m in r["per_source"].items():
            print(f"{'':>24} {m['n']:>6} {m['accuracy']:>8.4f} {m['auc'] or float('nan'):>6.4f}   ({source})")


if __name__ == "__main__":
    main()
