"""Metrics, calibration, plots and the run report; and scoring any saved model on any image folder.

    python -m train.evaluate --model runs/xception --data path/to/other/images [--output eval/]

Saved models are scored through `pipeline("image-classification")`, the same path a user takes; the training
loop calls the metric functions here on its in-memory model.
"""

import argparse
import csv
import json
import math
import os
import time
from statistics import NormalDist

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    recall_score,
    roc_auc_score,
)

from deepfake_detector import card
from deepfake_detector.faces import crop_face
from deepfake_detector.images import (
    ID2LABEL,
    LABEL2ID,
    ROBUSTNESS,
    DataError,
    degrade,
    load_image,
    reencode_jpeg,
)
from deepfake_detector.inference import (
    load_pipeline,
    pipeline_fake_probability,
    thresholds_of,
    verdict,
)
from deepfake_detector.layout import read_json, set_thresholds, write_json
from train.data import image_bytes, load_sources

FAKE, REAL = LABEL2ID["fake"], LABEL2ID["real"]
TARGET_PRECISION = 0.95  # verdict thresholds: how often a "fake" or "real" verdict must be right on validation
# ... and how sure of that validation must make us: the loosest threshold that merely reached 95 % on validation
# is picked for its luck, and fell to 94.2 % on test (runs/ensemble-pool-middle); a one-sided 95 % lower bound keeps
# the margin that a validation split of a few thousand images needs.
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------------------
# Metrics


def classification_metrics(labels, fake_probability, threshold=0.5):
    """The study's metrics and more, for labels (fake=0, real=1) and calibrated P(fake)."""
    labels = np.asarray(labels)
    fake_probability = np.asarray(fake_probability, dtype=np.float64)
    predictions = np.where(fake_probability >= threshold, FAKE, REAL)
    names = [ID2LABEL[i] for i in sorted(ID2LABEL)]
    metrics = {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "weighted_recall": float(recall_score(labels, predictions, average="weighted", zero_division=0)),
        "auc": roc_auc(labels, fake_probability),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=sorted(ID2LABEL)).tolist(),
        "classification_report": classification_report(
            labels, predictions, labels=sorted(ID2LABEL), target_names=names, output_dict=True, zero_division=0),
    }
    return metrics


def roc_auc(labels, fake_probability):
    """ROC-AUC of P(fake) for the fake class; None when only one class is present."""
    labels = np.asarray(labels)
    if len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels == FAKE, fake_probability))


def expected_calibration_error(labels, fake_probability, bins=15):
    """ECE of the predicted class's confidence, equal-width bins."""
    labels = np.asarray(labels)
    p = np.asarray(fake_probability, dtype=np.float64)
    predictions = np.where(p >= 0.5, FAKE, REAL)
    confidence = np.where(predictions == FAKE, p, 1 - p)
    correct = predictions == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high) if low > 0.5 else (confidence >= low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def fit_temperature(logits, labels):
    """The temperature T minimising validation NLL of softmax(logits / T) (Guo et al. 2017)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    found = log_t.exp().item()
    if np.isfinite(found):
        return float(np.clip(found, 0.05, 20.0))
    # LBFGS ran off to T = 0 or infinity (NaN), as on a tiny or one-sided validation split: take the better bound
    with torch.no_grad():
        return min([0.05, 20.0], key=lambda t: float(torch.nn.functional.cross_entropy(logits / t, labels)))


def fake_probability_of(logits, temperature=1.0):
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return (logits / temperature).softmax(-1)[:, FAKE].numpy()


def precision_lower_bound(right, n, confidence=CONFIDENCE):
    """One-sided Wilson score lower bound on a precision measured as `right` of `n` (the measured precision itself
    when `confidence` is None)."""
    if confidence is None:
        return right / n
    z = NormalDist().inv_cdf(confidence)
    p, z2 = right / n, z * z
    return (p + z2 / (2 * n) - z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)


def choose_thresholds(labels, fake_probability, target_precision=TARGET_PRECISION, min_share=0.05,
                      confidence=CONFIDENCE):
    """Two thresholds on P(fake): at or above `fake` the verdict is fake, at or below `real` it is real,
    between them uncertain.

    Each is the loosest one whose verdicts on validation were right `target_precision` of the time with
    `confidence` (the one-sided Wilson lower bound of their precision reaches it; never crossing 0.5). A weak model
    may never get there: then the threshold with the best precision that still gives a verdict for at least
    `min_share` of that class, so the model is not silenced altogether; the precision reached is recorded beside
    the thresholds.
    """
    labels = np.asarray(labels)
    p = np.asarray(fake_probability)

    def loosest(candidates, select, wanted):
        support = max(5, min_share * (labels == wanted).sum())
        best = None
        for t in candidates:
            chosen = select(t)
            if chosen.sum() < support:
                continue
            right = int((labels[chosen] == wanted).sum())
            precision = right / int(chosen.sum())
            if precision_lower_bound(right, int(chosen.sum()), confidence) >= target_precision:
                return float(t), precision
            if best is None or precision > best[1]:
                best = (float(t), precision)
        return best or (float(candidates[0]), None)

    grid = np.round(np.arange(0.50, 0.991, 0.01), 2)
    fake, fake_precision = loosest(grid, lambda t: p >= t, FAKE)
    real, real_precision = loosest(np.round(1 - grid, 2), lambda t: p <= t, REAL)
    return {"fake": fake, "real": real, "target_precision": target_precision, "confidence": confidence,
            "validation_precision": {"fake": fake_precision, "real": real_precision}}


def validation_rows(model):
    """The validation split a training run used (its splits.json), as rows to score."""
    return _split_rows(model, "validation")


def per_source_metrics(labels, fake_probability, sources):
    labels, p, sources = np.asarray(labels), np.asarray(fake_probability), np.asarray(sources)
    result = {}
    for source in sorted(set(sources.tolist())):
        inside = sources == source
        m = classification_metrics(labels[inside], p[inside])
        result[source] = {"n": m["n"], "accuracy": m["accuracy"], "auc": m["auc"]}
    return result


def cpu_latency_ms(model, data_config, repeats=20):
    """Median CPU milliseconds for one image (batch 1), the model in eval mode."""
    size = data_config["input_size"]
    model = model.eval().to("cpu")
    x = torch.randn(1, *size)
    timings = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(x)
            if i >= 3:
                timings.append((time.perf_counter() - start) * 1000)
    return float(np.median(timings))


# ---------------------------------------------------------------------------------------------------------
# Plots and report


def save_plots(folder, metrics, history=None, labels=None, fake_probability=None):
    """confusion_matrix.png, roc.png and training_curves.png; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    matrix = np.array(metrics["confusion_matrix"])
    names = [ID2LABEL[i] for i in sorted(ID2LABEL)]
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Test confusion matrix (accuracy {metrics['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "confusion_matrix.png"), dpi=120)
    plt.close(fig)
    written.append("confusion_matrix.png")

    if labels is not None and metrics.get("auc") is not None:
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(np.asarray(labels) == FAKE, fake_probability)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"AUC {metrics['auc']:.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set_xlabel("false positive rate (real called fake)")
        ax.set_ylabel("true positive rate (fake caught)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "roc.png"), dpi=120)
        plt.close(fig)
        written.append("roc.png")

    if history:
        epochs = [h["epoch"] for h in history]
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        left.plot(epochs, [h["train_loss"] for h in history], label="train")
        left.plot(epochs, [h["val_loss"] for h in history], label="validation")
        left.set_xlabel("epoch")
        left.set_ylabel("loss")
        left.legend()
        right.plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy")
        right.plot(epochs, [h["val_auc"] or 0 for h in history], label="val AUC")
        right.set_xlabel("epoch")
        right.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "training_curves.png"), dpi=120)
        plt.close(fig)
        written.append("training_curves.png")
    return written


def report_markdown(metrics):
    """report.md from metrics.json, rendered by the same sections as the model card (`deepfake_detector.card`)."""
    lines = [f"# {metrics.get('model', 'model')} — run report", ""]
    if command := card.get(metrics, "training", "command"):
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    sections = [card.evaluation(metrics), card.training_data(metrics), card.training_details(metrics)]
    return "\n".join(lines) + "\n\n".join(section for section in sections if section) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Scoring a saved model on an image folder, through pipeline()


def score_folder(model, data, *, degradations=("clean", "jpeg_q75"), batch_size=16, limit=None):
    """Score a saved model on image folders / Hub datasets: metrics, ECE, robustness, CPU ms/image."""
    rows = load_sources(data)
    if limit:
        rows = rows.shuffle(seed=0).select(range(min(limit, len(rows))))
    return score_rows(model, rows, degradations=degradations, batch_size=batch_size)


def test_split_rows(model):
    """The test split a training run held out (its splits.json), as rows to score."""
    return _split_rows(model, "test")


def _split_rows(model, split_name):
    """Rows of image, label, source (and face_box for a --crop-faces run) from a run's splits.json."""
    import datasets

    with open(os.path.join(model, "splits.json")) as f:
        rows = json.load(f)["rows"][split_name]
    if not all(rows["file"]):
        raise DataError(f"{model} was trained on a Hub dataset, whose images have no files to score again: score "
                        "it with python -m train.evaluate --data <the dataset> instead.")
    boxes = {"face_box": rows["face_box"]} if "face_box" in rows else {}
    return datasets.Dataset.from_dict({"image": [{"path": p, "bytes": None} for p in rows["file"]],
                                       "label": rows["label"], "source": rows["source"], **boxes})


def run_images(model, rows):
    """The images of `rows` as the run saw them: re-encoded as JPEG if it was trained with --reencode-jpeg, and
    cropped to each row's face box (--crop-faces) with the app's margin, so rescoring scores the same pixels."""
    quality = (read_json(os.path.join(str(model), "run_config.json")).get("DataArguments") or {}).get("reencode_jpeg")
    boxes = rows["face_box"] if "face_box" in rows.column_names else [None] * len(rows)
    images = []
    for image, box in zip(rows["image"], boxes):
        img = load_image(image_bytes(image))
        if quality:
            img = reencode_jpeg(img, quality)
        images.append(crop_face(img, box) if box else img)
    return images


def verdict_metrics(labels, fake_probability, thresholds):
    """At `thresholds`: the share of "uncertain" verdicts, and how often the committed ones (fake/real) are right."""
    labels = np.asarray(labels)
    verdicts = np.array([verdict(p, thresholds) for p in np.asarray(fake_probability)])
    committed = verdicts != "uncertain"
    right = verdicts[committed] == np.array([ID2LABEL[int(label)] for label in labels[committed]])
    return {"n": int(len(labels)), "uncertain_share": float(1 - committed.mean()) if len(labels) else None,
            "committed": int(committed.sum()), "committed_accuracy": float(right.mean()) if committed.any() else None}


def verdicts_by_source(labels, fake_probability, sources, thresholds):
    """`verdict_metrics` overall and per source: {"thresholds", "overall", "per_source": {source: ...}}."""
    labels, p, sources = np.asarray(labels), np.asarray(fake_probability), np.asarray(sources)
    return {"thresholds": {"fake": thresholds["fake"], "real": thresholds["real"]},
            "overall": verdict_metrics(labels, p, thresholds),
            "per_source": {source: verdict_metrics(labels[sources == source], p[sources == source], thresholds)
                           for source in sorted(set(sources.tolist()))}}


def refit_thresholds(model, target_precision=TARGET_PRECISION, confidence=CONFIDENCE):
    """Choose a run's verdict thresholds again from its validation split, through pipeline(); write them into
    metrics.json and config.json (where the app and pipeline users read them), with the test split's verdicts
    at the new thresholds (from the run's test_predictions.csv)."""
    rows = validation_rows(model)
    classifier = load_pipeline(model)
    p = pipeline_fake_probability(classifier, run_images(model, rows))
    thresholds = choose_thresholds(rows["label"], p, target_precision, confidence=confidence)
    path = os.path.join(model, "metrics.json")
    metrics = read_json(path)
    metrics["thresholds"] = thresholds
    predictions = os.path.join(model, "test_predictions.csv")
    if os.path.isfile(predictions):
        with open(predictions, newline="") as f:
            test = list(csv.DictReader(f))
        metrics["verdicts"] = verdicts_by_source([LABEL2ID[row["label"]] for row in test],
                                                 [float(row["fake_probability"]) for row in test],
                                                 [row["source"] for row in test], thresholds)
    write_json(path, metrics)
    set_thresholds(model, thresholds)
    with open(os.path.join(model, "report.md"), "w") as f:
        f.write(report_markdown(metrics))
    return thresholds


def score_rows(model, rows, *, degradations=("clean", "jpeg_q75"), batch_size=16):
    """Metrics of a saved model on `rows` through pipeline(); with thresholds in its config.json, also the share
    of uncertain verdicts and the accuracy of committed ones ("verdicts"), overall and per source."""
    classifier = load_pipeline(model)
    labels = np.array(rows["label"])
    images = run_images(model, rows)
    thresholds = thresholds_of(classifier.model.config)
    result = {"model": model, "robustness": {}}
    for kind in degradations:
        p = pipeline_fake_probability(classifier, [degrade(img, kind) for img in images], batch_size=batch_size)
        m = classification_metrics(labels, p)
        if kind == "clean":
            result.update(m, ece=expected_calibration_error(labels, p),
                          per_source=per_source_metrics(labels, p, list(rows["source"])), fake_probability=p)
            if thresholds:
                result["verdicts"] = verdicts_by_source(labels, p, list(rows["source"]), thresholds)
        result["robustness"][kind] = {"accuracy": m["accuracy"], "auc": m["auc"]}
    timings = []
    for img in images[:20]:
        start = time.perf_counter()
        classifier(img)
        timings.append((time.perf_counter() - start) * 1000)
    result["pipeline_cpu_ms_per_image"] = float(np.median(timings))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Saved model folder or Hub id")
    parser.add_argument("--data", action="extend", nargs="+", help="Image folder(s) or Hub dataset id(s)")
    parser.add_argument("--refit-thresholds", action="store_true",
                        help="Choose a run's verdict thresholds again on its validation split (updates metrics.json and "
                             "config.json)")
    parser.add_argument("--target-precision", type=float, default=TARGET_PRECISION,
                        help="With --refit-thresholds: how often a fake/real verdict must be right on validation")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE,
                        help="With --refit-thresholds: how sure validation must make us of that (one-sided Wilson "
                             "lower bound; 0.5 takes the measured precision as it is)")
    parser.add_argument("--output", help="Folder for metrics.json (printed only when absent)")
    parser.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=True,
                        help="Also score every degraded condition (JPEG q90/75/50, blur, downscale)")
    parser.add_argument("--limit", type=int, help="Score a random sample of this many images")
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1 or not 0 < args.target_precision < 1:
        parser.error("--target-precision and --confidence take a share between 0 and 1, e.g. 0.95.")
    if args.refit_thresholds:
        if not os.path.isfile(os.path.join(args.model, "splits.json")):
            parser.exit(2, f"evaluate: error: {args.model} has no splits.json: refit thresholds on a folder written "
                           "by python -m train.\n")
        try:
            print(json.dumps(refit_thresholds(args.model, args.target_precision, args.confidence)))
        except DataError as e:
            parser.exit(2, f"evaluate: error: {e}\n")
        return {}
    if not args.data:
        parser.exit(2, "evaluate: error: pass --data with the image folder(s) to score the model on.\n")
    try:
        result = score_folder(args.model, args.data, limit=args.limit,
                              degradations=ROBUSTNESS if args.robustness else ("clean", "jpeg_q75"))
    except DataError as e:
        parser.exit(2, f"evaluate: error: {e}\n")
    summary = {k: result[k] for k in ("n", "accuracy", "weighted_recall", "auc", "ece", "pipeline_cpu_ms_per_image")}
    print(json.dumps(summary, indent=2))
    print("robustness:", json.dumps(result["robustness"]))
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        write_json(os.path.join(args.output, "metrics.json"), result)
        save_plots(args.output, result)
    return result


if __name__ == "__main__":
    main()
