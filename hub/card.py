"""Model cards and the Space header, as pure functions: a dict in, markdown out.

- `model_card(metrics, repo_id=...)`: the README.md of a model repo, from the `metrics.json` a training run
  writes (every number in it comes from that dict; a missing key drops its section, never prints "None").
- `space_front_matter(models=...)` + `update_front_matter(readme, front_matter)`: the YAML header the Space
  reads from the project's README.md, written above the human README without touching its body.

`python -m hub push` writes the card into a model folder that has none; `python -m hub space-readme`
refreshes the project README's header. Tests parse both back with `huggingface_hub.ModelCard`.
"""

import math
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath

import yaml

LICENSE = "cc-by-nc-4.0"  # FFHQ reals are CC BY-NC-SA 4.0, StyleGAN fakes CC BY-NC 4.0, CIPLab research-only
DEFAULT_REPO_ID = "your-username/deepfake-detector"  # only for snippets of a card made without a repo id

# What each training set is, for cards of runs whose metrics.json names it (metrics["data"]["licenses"] wins).
KNOWN_DATASETS = {
    "faces140k": {
        "what": "Kaggle's \"140k Real and Fake Faces\" (a sample): real FFHQ face crops and StyleGAN (v1) fakes",
        "seen": "StyleGAN (v1) generated faces",
        "license": "FFHQ images CC BY-NC-SA 4.0 (NVIDIA); StyleGAN fakes CC BY-NC 4.0",
    },
    "faces140k-extra": {
        "what": "more images of the same Kaggle collection, re-saved as JPEG q75",
        "seen": "StyleGAN (v1) generated faces, JPEG-recompressed",
        "license": "FFHQ images CC BY-NC-SA 4.0 (NVIDIA); StyleGAN fakes CC BY-NC 4.0",
    },
    "ciplab": {
        "what": "Kaggle's \"Real and Fake Face Detection\" (Yonsei University CIPLab): expert Photoshop composites",
        "seen": "hand-made Photoshop composites (eyes, nose, mouth or whole face pasted in)",
        "license": "published on Kaggle for research use; no licence file",
    },
}
NOT_SEEN = [
    "images from diffusion models (Stable Diffusion, Midjourney, DALL·E, Flux, …) and newer GANs (StyleGAN2/3)",
    "face swaps and reenactment in video (DeepFaceLab, FaceSwap, first-order-motion), judged frame by frame",
    "heavy recompression and resizing by social networks, screenshots, photos of screens",
    "faces that are not cropped and aligned like FFHQ, several faces per image, and images without faces",
]
ROBUSTNESS_LABELS = {
    "clean": "clean", "jpeg_q90": "JPEG quality 90", "jpeg_q75": "JPEG quality 75", "jpeg_q50": "JPEG quality 50",
    "blur": "Gaussian blur", "downscale_64": "downscaled to 64 px and back",
}
PLOTS = {"confusion_matrix.png": "Confusion matrix", "roc.png": "ROC curve", "training_curves.png": "Training curves"}


# ---- number formatting: a missing or non-finite value never prints as None/nan ---------------------------
def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _fmt(value, digits: int = 4) -> str:
    value = _number(value)
    return "–" if value is None else f"{value:.{digits}f}"


def _count(value) -> str:
    value = _number(value)
    return "–" if value is None else str(round(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _get(metrics: dict, *keys, default=None):
    """metrics[k1][k2]… or default when any level is missing."""
    for key in keys:
        if not isinstance(metrics, dict) or metrics.get(key) is None:
            return default
        metrics = metrics[key]
    return metrics


# ---- what the card is about ------------------------------------------------------------------------------
def _library(metrics: dict) -> str:
    return metrics.get("library_name") or ("transformers" if metrics.get("model") == "ensemble" else "timm")


def _dataset_names(metrics: dict) -> list[str]:
    sources = _get(metrics, "data", "sources", default=[])
    names = _get(metrics, "data", "datasets") or [PurePosixPath(source).name for source in sources]
    return [str(name) for name in names]


def _model_name(metrics: dict, repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    return f"deepfake-detector-{metrics.get('model', 'model')}"


# ---- front matter ----------------------------------------------------------------------------------------
def card_metadata(metrics: dict, *, repo_id: str | None = None) -> dict:
    """The YAML front matter of a model card, as a dict."""
    library = _library(metrics)
    tags = ["deepfake-detection", "fake-face-detection", "image-classification", library]
    if metrics.get("model") == "ensemble":
        tags.append("custom_code")
    meta = {"library_name": library, "pipeline_tag": "image-classification", "license": LICENSE, "tags": tags}
    if datasets := _dataset_names(metrics):
        meta["datasets"] = datasets
    if metrics.get("pretrained") is True and metrics.get("base_model"):
        meta["base_model"] = metrics["base_model"]
    meta["metrics"] = ["accuracy", "recall", "roc_auc"]
    if results := _eval_results(metrics):
        meta["model-index"] = [{"name": _model_name(metrics, repo_id), "results": results}]
    return meta


def _eval_result(dataset_type: str, dataset_name: str, scores: dict) -> dict | None:
    names = {"accuracy": ("accuracy", "Accuracy"), "weighted_recall": ("recall", "Weighted recall"),
             "auc": ("roc_auc", "ROC-AUC")}
    found = [{"type": kind, "value": _number(scores.get(key)), "name": label}
             for key, (kind, label) in names.items() if _number(scores.get(key)) is not None]
    if not found:
        return None
    task = {"type": "image-classification", "name": "Image Classification"}
    return {"task": task, "dataset": {"type": dataset_type, "name": dataset_name, "split": "test"}, "metrics": found}


def _eval_results(metrics: dict) -> list[dict]:
    datasets = _dataset_names(metrics)
    test_name = f"held-out test split ({', '.join(datasets)})" if datasets else "held-out test split"
    results = [_eval_result("+".join(datasets) or "test", test_name, metrics.get("test") or {})]
    for name, scores in (metrics.get("extra_evaluations") or {}).items():
        results.append(_eval_result(name, name, scores or {}))
    return [result for result in results if result is not None]


# ---- sections --------------------------------------------------------------------------------------------
def _summary(metrics: dict, repo_id: str | None) -> str:
    arch = metrics.get("architecture") or metrics.get("model")
    kind = f"`{arch}`, {_library(metrics)}" if arch else _library(metrics)
    if metrics.get("pretrained"):
        base = metrics.get("base_model")
        origin = f" It was fine-tuned from `{base}`" if base else " It was fine-tuned"
    elif "pretrained" in metrics:
        origin = " It was trained from scratch"
    else:
        origin = " It was trained" if _number(metrics.get("image_size")) else ""
    labels = metrics.get("labels") or {"0": "fake", "1": "real"}
    label_text = ", ".join(f"`{i}` = {name}" for i, name in sorted(labels.items()))
    size = _count(metrics.get("image_size"))
    at_size = f" at {size}×{size} px" if _number(metrics.get("image_size")) else ""
    lines = [f"# {_model_name(metrics, repo_id)}", "",
             f"An image classifier ({kind}) that estimates whether a face image is real or generated/manipulated "
             f"(a \"deepfake\").{origin}{at_size}{'.' if origin else ''} Labels: {label_text}."]
    test = metrics.get("test") or {}
    if _number(test.get("accuracy")) is not None:
        scores = f"accuracy {_fmt(test['accuracy'])}"
        if _number(test.get("auc")) is not None:
            scores += f", ROC-AUC {_fmt(test['auc'])}"
        on = f"{_count(test['n'])} held-out test images" if _number(test.get("n")) else "the held-out test split"
        lines += ["", f"Test {scores} on {on}."]
    return "\n".join(lines)


def _intended_use() -> str:
    return "\n".join([
        "## Intended use and misuse", "",
        "- For research, teaching and as one signal among others when checking whether a face photo was "
        "generated or edited.",
        "- The output is a **probability, not proof**. A confident score can be wrong, above all on images "
        "unlike the training data (see *Limitations*).",
        "- Do **not** use it on its own to make decisions about people (moderation, hiring, legal or "
        "journalistic claims, accusations): keep a human reviewer in the loop and say that a model was used.",
        f"- Non-commercial use only: the licence ({LICENSE}) follows from the training data.",
    ])


def _training_data(metrics: dict) -> str:
    datasets = _dataset_names(metrics)
    counts = _get(metrics, "data", "counts") or {}
    if not datasets and not counts:
        return ""
    licenses = _get(metrics, "data", "licenses") or {}
    lines = ["## Training data", ""]
    for name in datasets:
        known = KNOWN_DATASETS.get(name, {})
        what = f": {known['what']}" if known.get("what") else ""
        license_text = licenses.get(name) or known.get("license")
        lines.append(f"- `{name}`{what}" + (f". Licence: {license_text}." if license_text else "."))
    if counts:
        rows = []
        for split, per_label in counts.items():
            per_label = per_label or {}
            total = sum(v for v in per_label.values() if _number(v) is not None)
            rows.append([split, _count(per_label.get("fake")), _count(per_label.get("real")), _count(total)])
        lines += ["", "Images per split:", "",
                  _table(["split", "fake", "real", "total"], rows)]
    lines += ["", "A model trained on these images inherits their non-commercial terms."]
    return "\n".join(lines)


def _metrics_table(test: dict) -> str:
    rows = [[label, _fmt(test.get(key))] for key, label in [
        ("accuracy", "Accuracy"), ("weighted_recall", "Weighted recall"), ("auc", "ROC-AUC"),
        ("ece_before", "ECE before calibration"), ("ece_after", "ECE after calibration")]
        if _number(test.get(key)) is not None]
    return _table(["metric", "value"], rows) if rows else ""


def _classification_report(report: dict) -> str:
    rows = []
    for name in ("fake", "real", "macro avg", "weighted avg"):
        scores = report.get(name)
        if isinstance(scores, dict):
            values = [_fmt(scores.get(k)) for k in ("precision", "recall", "f1-score")]
            rows.append([name, *values, _count(scores.get("support"))])
    if _number(report.get("accuracy")) is not None:
        rows.append(["accuracy", "", "", _fmt(report["accuracy"]), ""])
    return _table(["class", "precision", "recall", "f1-score", "support"], rows) if rows else ""


def _confusion_matrix(matrix) -> str:
    try:
        (fake_fake, fake_real), (real_fake, real_real) = matrix
    except (TypeError, ValueError):
        return ""
    return _table(["true \\ predicted", "fake", "real"],
                  [["fake", _count(fake_fake), _count(fake_real)], ["real", _count(real_fake), _count(real_real)]])


def _per_source(per_source: dict) -> str:
    rows = [[f"`{name}`", _count(scores.get("n")), _fmt(scores.get("accuracy")), _fmt(scores.get("auc"))]
            for name, scores in per_source.items() if isinstance(scores, dict)]
    return _table(["source", "images", "accuracy", "ROC-AUC"], rows) if rows else ""


def _robustness(robustness: dict) -> str:
    """Rows of accuracy (and AUC) per condition; values are {"accuracy", "auc"} dicts or bare accuracies."""
    scores = {key: value if isinstance(value, dict) else {"accuracy": value} for key, value in robustness.items()}
    clean = _number(scores.get("clean", {}).get("accuracy"))
    rows = []
    for key, value in scores.items():
        accuracy = _number(value.get("accuracy"))
        if accuracy is None:
            continue
        change = "" if clean is None or key == "clean" else f"{accuracy - clean:+.4f}"
        rows.append([ROBUSTNESS_LABELS.get(key, key), _fmt(accuracy), _fmt(value.get("auc")), change])
    return _table(["test images", "accuracy", "ROC-AUC", "accuracy change vs clean"], rows) if rows else ""


def _evaluation(metrics: dict) -> str:
    test = metrics.get("test") or {}
    parts = []
    if table := _metrics_table(test):
        n = f" ({_count(test['n'])} images)" if _number(test.get("n")) else ""
        parts.append(f"On the held-out test split{n}:\n\n{table}")
    calibration = []
    if _number(metrics.get("temperature")) is not None:
        calibration.append(f"temperature scaling, T = {metrics['temperature']:g}")
    if thresholds := {k: v for k, v in (metrics.get("thresholds") or {}).items() if _number(v) is not None}:
        calibration.append("decision thresholds " + ", ".join(f"`{k}`: {v:g}" for k, v in thresholds.items()))
        reached = {k: v for k, v in ((metrics.get("thresholds") or {}).get("validation_precision") or {}).items()
                   if _number(v) is not None}
        if reached:
            calibration.append("verdicts right on validation: " + ", ".join(f"{k} {v:.0%}" for k, v in reached.items()))
    if calibration:
        parts.append("Calibration: " + "; ".join(calibration) + ".")
    if table := _classification_report(test.get("classification_report") or {}):
        parts.append(f"### Classification report\n\n{table}")
    if table := _confusion_matrix(test.get("confusion_matrix")):
        parts.append(f"### Confusion matrix\n\n{table}")
    files = metrics.get("files") or []
    if plots := [f"![{label}]({name})" for name, label in PLOTS.items() if name in files]:
        parts.append("\n\n".join(plots))
    if table := _per_source(metrics.get("per_source") or {}):
        parts.append(f"### Per source\n\n{table}")
    if table := _robustness(metrics.get("robustness") or {}):
        parts.append(f"### Robustness\n\nAccuracy on the test split after degrading every image:\n\n{table}")
    extra = metrics.get("extra_evaluations") or {}
    if table := _per_source(extra):
        parts.append(f"### Other test sets\n\n{table}")
    return "## Evaluation\n\n" + "\n\n".join(parts) if parts else ""


def _limitations(metrics: dict) -> str:
    datasets = _dataset_names(metrics)
    seen = [KNOWN_DATASETS.get(name, {}).get("seen", f"the fakes of `{name}`") for name in datasets]
    lines = ["## Limitations", ""]
    if seen:
        lines += ["Fakes it has seen in training: " + "; ".join(dict.fromkeys(seen)) + ".", ""]
    lines += ["Not seen in training, so expect unreliable scores on:", ""] + [f"- {item}" for item in NOT_SEEN]
    notes = []
    if any(name.startswith("faces140k") for name in datasets):
        notes.append("The real faces of faces140k are aligned, centred FFHQ crops: crop the face before scoring "
                     "a photo.")
    if len(metrics.get("per_source") or {}) > 1:
        notes.append("Accuracy differs between sources (see *Per source*).")
    n, accuracy = _number(_get(metrics, "test", "n")), _number(_get(metrics, "test", "accuracy"))
    if n and accuracy is not None:
        margin = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)  # normal approximation of a binomial proportion
        notes.append(f"With {_count(n)} test images, the test accuracy is known to about ±{margin:.3f} "
                     "(95% interval); differences smaller than that between models or conditions are noise.")
    return "\n".join(lines + (["", " ".join(notes)] if notes else []))


def _how_to_use(metrics: dict, repo_id: str | None) -> str:
    repo_id = repo_id or DEFAULT_REPO_ID
    remote = metrics.get("model") == "ensemble"
    trust = ", trust_remote_code=True" if remote else ""
    lines = ["## How to use", "", "```python", "from transformers import pipeline", "",
             f'detector = pipeline("image-classification", model="{repo_id}"{trust})',
             'detector("face.jpg")  # [{"label": "fake", "score": ...}, {"label": "real", "score": ...}]', "```"]
    if remote:
        lines += ["", "`trust_remote_code=True` runs the ensemble's modelling code from this repo "
                  "(`modeling_deepfake_ensemble.py`); read it first, or pin a `revision`."]
    if _library(metrics) == "timm":
        lines += ["", "With timm directly:", "", "```python", "import timm", "",
                  f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
                  "config = timm.data.resolve_data_config({}, model=model)",
                  "transform = timm.data.create_transform(**config)", "```"]
    return "\n".join(lines)


def _training_details(metrics: dict) -> str:
    training = metrics.get("training") or {}
    epochs = _number(training.get("epochs"))
    items = []
    if epochs is not None:
        ran = _number(training.get("epochs_run"))
        text = _count(epochs) + (f" ({_count(ran)} run)" if ran is not None and ran != epochs else "")
        if _number(training.get("best_epoch")) is not None:
            text += f", best validation score at epoch {_count(training['best_epoch'])}"
        items.append(("Epochs", text))
    if _number(metrics.get("image_size")) is not None:
        items.append(("Image size", f"{_count(metrics['image_size'])} × {_count(metrics['image_size'])} px"))
    if _number(training.get("wall_time_s")) is not None:
        minutes = training["wall_time_s"] / 60
        items.append(("Training time", f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"))
    if _number(training.get("train_images_per_s")) is not None:
        items.append(("Throughput", f"{training['train_images_per_s']:.1f} training images/s"))
    if training.get("device"):
        items.append(("Machine", str(training["device"])))
    if _number(training.get("seed")) is not None:
        items.append(("Seed", _count(training["seed"])))
    if _number(_get(metrics, "inference", "cpu_ms_per_image")) is not None:
        items.append(("CPU inference", f"{metrics['inference']['cpu_ms_per_image']:.1f} ms per image"))
    if not items:
        return ""
    return "## Training details\n\n" + "\n".join(f"- {name}: {value}" for name, value in items)


def _reproduce(metrics: dict) -> str:
    command = _get(metrics, "training", "command")
    if not command:
        return ""
    return f"## Reproduce\n\nFrom the root of the project's repository:\n\n```bash\n{command}\n```"


def _notes(metrics: dict) -> str:
    """What was tried and what it gave: `notes` in metrics.json, a list of sentences added after training."""
    notes = [note for note in metrics.get("notes") or [] if isinstance(note, str) and note.strip()]
    return "## What was tried\n\n" + "\n".join(f"- {note}" for note in notes) if notes else ""


def model_card(metrics: dict, *, repo_id: str | None = None) -> str:
    """The README.md of a model repo, built only from a run's metrics.json (see module docstring)."""
    sections = [_summary(metrics, repo_id), _intended_use(), _training_data(metrics), _evaluation(metrics),
                _limitations(metrics), _how_to_use(metrics, repo_id), _training_details(metrics), _notes(metrics),
                _reproduce(metrics)]
    body = "\n\n".join(section for section in sections if section)
    return render_front_matter(card_metadata(metrics, repo_id=repo_id)) + "\n" + body + "\n"


# ---- front matter in general and the Space header --------------------------------------------------------
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|\Z)", re.DOTALL)


def render_front_matter(data: dict) -> str:
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120) + "---\n"


def split_front_matter(text: str) -> tuple[dict, str]:
    """(front matter as a dict, body) of a README; ({}, text) when it has none."""
    match = FRONT_MATTER.match(text)
    if not match:
        return {}, text
    return yaml.safe_load(match.group(1) or "") or {}, text[match.end():]


def update_front_matter(text: str, front_matter: dict) -> str:
    """`text` with `front_matter` merged over its YAML header (added if missing); the body is kept as is."""
    current, body = split_front_matter(text)
    return render_front_matter({**current, **front_matter}) + body


def _gradio_version() -> str | None:
    try:
        return version("gradio")  # the installed version, without the cost of importing gradio
    except PackageNotFoundError:
        return None


def _check_short_description(text: str) -> None:
    if len(text) > 60:
        raise ValueError(f"short_description must be 60 characters at most (the Hub refuses longer): "
                         f"{text!r} has {len(text)}")


def space_front_matter(*, models: list[str], title: str = "Deepfake Image Detector", emoji: str = "🕵️",
                       color_from: str = "indigo", color_to: str = "gray", sdk_version: str | None = None,
                       license: str = LICENSE,
                       short_description: str = "Is this face real or generated? Three detectors, explained.",
                       pinned: bool = False) -> dict:
    """The Space configuration header (https://huggingface.co/docs/hub/spaces-config-reference)."""
    _check_short_description(short_description)
    header = {"title": title, "emoji": emoji, "colorFrom": color_from, "colorTo": color_to, "sdk": "gradio"}
    if sdk_version := sdk_version or _gradio_version():
        header["sdk_version"] = sdk_version
    header.update({"app_file": "app.py", "pinned": pinned, "license": license,
                   "short_description": short_description, "models": list(models)})
    return header


# Keys the code owns and rewrites on every refresh; the others (title, emoji, colours, description, pinned)
# belong to whoever edits the README and are only filled in when missing.
SPACE_OWNED_KEYS = ("sdk", "sdk_version", "app_file", "license", "models")


def refresh_space_header(text: str, *, models: list[str]) -> str:
    """README text with its Space header up to date (see SPACE_OWNED_KEYS); the body is kept as is."""
    current, _ = split_front_matter(text)
    header = space_front_matter(models=models)
    owned = {key: header[key] for key in SPACE_OWNED_KEYS if key in header}
    merged = {**header, **current, **owned}
    _check_short_description(str(merged.get("short_description", "")))
    return update_front_matter(text, merged)
