"""Inference: the one way a saved model is loaded, the detector object the app serves, and the verdict rule.

    classifier = load_pipeline("models/ensemble")           # transformers' image-classification pipeline
    p_fake = pipeline_fake_probability(classifier, [img])    # P(fake) per image
    verdict(classifier(img), classifier.model.config)        # "fake", "real" or "uncertain", at the model's thresholds

    detectors = load_detectors({"ensemble": "models/ensemble"})   # {name: Detector}, each pipeline loaded once
    scored = score_faces(detectors["ensemble"], img)              # every face found, scored at the model's thresholds

A `pipeline("image-classification")` user takes the same path: `load_pipeline` is that call with
`trust_remote_code` decided by the folder (an ensemble carries its modeling file). Nothing here knows about
Gradio: a problem with the input is a `DataError`, which the app shows as is.
"""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_detector.faces import crop_face, detect_faces, face_in_crop
from deepfake_detector.images import ID2LABEL, DataError
from deepfake_detector.layout import THRESHOLDS_KEY, read_json

VERDICTS = ("fake", "real", "uncertain")
NO_THRESHOLDS = {"fake": 0.5, "real": 0.5}  # for a folder saved without verdict thresholds: never "uncertain"
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_pipeline(model, *, revision=None, device=None):
    """The one way a saved model is loaded: transformers' image-classification pipeline."""
    from transformers import pipeline

    _quiet_transformers()
    try:
        classifier = pipeline("image-classification", model=model, revision=revision, device=device,
                              trust_remote_code=needs_remote_code(model))
    except (OSError, ValueError) as e:
        raise DataError(f"{model} is not a model folder or Hub model this project can load "
                        f"({str(e).splitlines()[0]}): pass a folder written by python -m train.") from None
    # The folder's processor crops the largest face for pipeline() callers; the project crops every face itself
    # (the app reports each one, training and evaluation read cached boxes), so it hands over crops.
    if hasattr(classifier.image_processor, "crop_faces"):
        classifier.image_processor.crop_faces = False
    return classifier


class _NoFalseBackendWarning(logging.Filter):
    """transformers asks for a torchvision image processor first, and timm models only have a PIL one, so every
    load logs "Requested torchvision backend is not available" although nothing is wrong: dropped."""

    def filter(self, record):
        return not record.getMessage().startswith("Requested torchvision backend is not available")


def _quiet_transformers():
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the per-load "Loading weights" bar, in the app's log
    auto = logging.getLogger("transformers.models.auto.image_processing_auto")
    if not any(isinstance(f, _NoFalseBackendWarning) for f in auto.filters):
        auto.addFilter(_NoFalseBackendWarning())


def needs_remote_code(model):
    """Folders with an `auto_map` (the ensemble's modeling file, the face-cropping processor) need remote code;
    so may a Hub id."""
    config = os.path.join(str(model), "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            return "auto_map" in json.load(f)
    return not os.path.isdir(str(model))


def pipeline_fake_probability(classifier, images, batch_size=16):
    """P(fake) for PIL images through a pipeline."""
    outputs = classifier(images, top_k=len(ID2LABEL), batch_size=batch_size)
    if images and not isinstance(outputs[0], list):
        outputs = [outputs]
    return np.array([next(o["score"] for o in out if o["label"] == "fake") for out in outputs])


# ---------------------------------------------------------------------------------------------------------
# The verdict rule


def verdict(prediction, thresholds):
    """"fake" at or above thresholds["fake"] on P(fake), "real" at or below thresholds["real"], else "uncertain".

    For a `pipeline()` user, in one call: `verdict(classifier(image), classifier.model.config)`.
    `prediction` is P(fake), or the pipeline's output for one image ([{"label", "score"}, ...]);
    `thresholds` is {"fake", "real"}, or the model's config (the loaded config or config.json as a dict),
    which carries them under "verdict_thresholds".
    """
    p = fake_probability(prediction)
    t = thresholds if _is_rule(thresholds) else thresholds_of(thresholds)
    if t is None:
        raise DataError(f"The model's config has no {THRESHOLDS_KEY}: write them into its folder with "
                        "python -m hub set-thresholds FOLDER, or pass {'fake': ..., 'real': ...}.")
    if p >= t["fake"]:
        return "fake"
    if p <= t["real"]:
        return "real"
    return "uncertain"


def _is_rule(thresholds):
    return isinstance(thresholds, dict) and "fake" in thresholds and "real" in thresholds


def fake_probability(prediction):
    """P(fake) from a number or from a pipeline's output for one image (top_k=1 may leave only "real")."""
    if isinstance(prediction, (list, tuple)):
        scores = {o["label"]: float(o["score"]) for o in prediction}
        if "fake" in scores:
            return scores["fake"]
        if "real" in scores:
            return 1.0 - scores["real"]
        raise DataError(f"Not a fake/real prediction: {prediction!r}; pass this project's model's output.")
    return float(prediction)


def thresholds_of(config):
    """{"fake", "real"} from a model's config (a transformers config or config.json as a dict); None if absent."""
    t = config.get(THRESHOLDS_KEY) if isinstance(config, dict) else getattr(config, THRESHOLDS_KEY, None)
    if not t:
        return None
    return {"fake": float(t["fake"]), "real": float(t["real"])}


# ---------------------------------------------------------------------------------------------------------
# The detector the app serves


# One model loads at a time: two threads importing transformers/timm at once can see a half-imported module
# (ImportError: "partially initialized module 'timm.data'"), e.g. a request while the background load runs.
_LOADING = threading.Lock()


@dataclass
class Detector:
    """A served model: what its folder says (config.json, metrics.json, the card) at once, the pipeline on first
    use, so the app can show its page before the models are in memory."""
    name: str
    path: str
    source: str  # hub, cache, embedded, or "local folder" for a path given directly
    repo_id: str | None = None
    metrics: dict = field(default_factory=dict)
    card: str = ""  # the folder's README.md, when it has one
    config: dict = field(default_factory=dict)  # the folder's config.json
    _classifier: object = field(default=None, repr=False)

    @property
    def classifier(self):
        """The transformers image-classification pipeline, loaded and warmed up on first use; threads that ask
        while it loads wait for that one load."""
        with _LOADING:
            if self._classifier is None:
                start = time.perf_counter()
                classifier = load_pipeline(self.path)
                # Warm up: the first call is several times slower.
                classifier(Image.new("RGB", (64, 64), (128, 128, 128)))
                self._classifier = classifier
                logger.info("loaded %s from %s in %.1f s", self.name, self.path, time.perf_counter() - start)
        return self._classifier

    @property
    def loaded(self):
        return self._classifier is not None

    @property
    def thresholds(self):
        """Verdict thresholds on P(fake) from the model's config.json; 0.5/0.5 (no "uncertain") without them."""
        return thresholds_of(self.config) or dict(NO_THRESHOLDS)


def load_detectors(models, repo_ids=None, *, load="now"):
    """{name: folder or a resolved model with .path/.source} -> {name: Detector}.

    load: "now" loads every pipeline before returning; "background" returns at once and loads them in one
    background thread, the default model (default_model) first, so a page can be served meanwhile (a request
    that needs a model still loading waits for it); "lazy" loads each on its first use.
    """
    if load not in ("now", "background", "lazy"):
        raise ValueError(f"load={load!r}: choose 'now', 'background' or 'lazy'.")
    detectors = {}
    for name, model in models.items():
        path = str(getattr(model, "path", model))
        card_path = os.path.join(path, "README.md")
        card = Path(card_path).read_text(encoding="utf-8") if os.path.isfile(card_path) else ""
        config = read_json(os.path.join(path, "config.json"))
        if thresholds_of(config) is None:
            logger.warning("%s: its config.json has no %s, so verdicts use 0.5 (never uncertain); write them with "
                           "python -m hub set-thresholds %s", name, THRESHOLDS_KEY, path)
        detectors[name] = Detector(name, path, getattr(model, "source", "local folder"), (repo_ids or {}).get(name),
                                   read_json(os.path.join(path, "metrics.json")), card, config)
    if load == "now":
        for detector in detectors.values():
            detector.classifier
    elif load == "background":
        load_in_background(detectors)
    return detectors


def load_in_background(detectors):
    """Load every pipeline of {name: Detector} in one daemon thread, the default model first -> the thread."""
    order = sorted(detectors, key=lambda n: n != default_model(detectors)) if detectors else []
    thread = threading.Thread(target=_load_all, args=([detectors[name] for name in order],), name="load-models",
                              daemon=True)
    thread.start()
    return thread


def _load_all(detectors):
    for detector in detectors:
        try:
            detector.classifier
        except Exception:  # noqa: BLE001 - said in the log; the first request for it retries and gets the error
            logger.exception("could not load %s from %s", detector.name, detector.path)


def default_model(detectors):
    """The model with the best test AUC in its metrics.json (the first one when none says)."""
    return max(detectors, key=lambda name: (detectors[name].metrics.get("test") or {}).get("auc") or 0.0)


def choose(detectors, name):
    """detectors[name], or a DataError naming the models there are."""
    if name not in detectors:
        raise DataError(f"Unknown model {name!r}: choose one of {', '.join(detectors)}.")
    return detectors[name]


# ---------------------------------------------------------------------------------------------------------
# Scoring faces


def score(detector, images):
    """P(fake) of each image and the milliseconds the model took."""
    start = time.perf_counter()
    p_fake = pipeline_fake_probability(detector.classifier, images)
    return p_fake, (time.perf_counter() - start) * 1000


def faces_and_crops(img):
    """The faces found in `img` (the whole image when none) and each one's crop, as the training crops."""
    faces = detect_faces(img)
    return faces, [crop_face(img, face.box) for face in faces]


def main_face(img, with_region=False):
    """The crop of the largest face (the whole image when there is none) and how to say which it is; with
    `with_region`, also the face's box inside the crop (None for the whole image), what LIME explains."""
    faces, crops = faces_and_crops(img)
    note = "the whole image (no face found)" if faces[0].whole_image else (
        "the face" if len(faces) == 1 else f"the largest of {len(faces)} faces")
    if with_region:
        return crops[0], note, None if faces[0].whole_image else face_in_crop(img.size, faces[0].box)
    return crops[0], note


@dataclass
class ScoredFaces:
    faces: list  # faces.Face, largest first; one whole-image Face when none was found
    p_fake: np.ndarray
    verdicts: list
    thresholds: dict
    detect_ms: float = 0.0
    model_ms: float = 0.0

    @property
    def worst(self):
        """P(fake) of the most suspicious face: an image is as suspicious as its most suspicious face."""
        return float(self.p_fake.max())

    @property
    def face_count(self):
        return 0 if self.faces[0].whole_image else len(self.faces)


def score_faces(detector, img, thresholds=None):
    """Every face in `img` scored by one model, with verdicts at `thresholds` (default: the model's own)."""
    thresholds = thresholds or detector.thresholds
    start = time.perf_counter()
    faces, crops = faces_and_crops(img)
    detect_ms = (time.perf_counter() - start) * 1000
    p_fake, model_ms = score(detector, crops)
    return ScoredFaces(faces, p_fake, [verdict(p, thresholds) for p in p_fake], thresholds, detect_ms, model_ms)


def compare_models(detectors, crop):
    """One face through every model at its own thresholds -> rows of model, p_fake, verdict, latency, thresholds."""
    rows = []
    for detector in detectors.values():
        p_fake, ms = score(detector, [crop])
        t = detector.thresholds
        rows.append({"model": detector.name, "p_fake": round(float(p_fake[0]), 4), "verdict": verdict(p_fake[0], t),
                     "latency_ms": round(ms, 1), "thresholds (fake, real)": f"{t['fake']:.2f}, {t['real']:.2f}"})
    return rows


def agreement(rows):
    """Whether the models of `compare_models` agree, in one markdown sentence."""
    verdicts = [row["verdict"] for row in rows]
    if len(set(verdicts)) == 1:
        return f"All {len(verdicts)} models agree: **{verdicts[0]}**."
    groups = {v: [r["model"] for r in rows if r["verdict"] == v] for v in dict.fromkeys(verdicts)}
    return "The models **disagree**: " + "; ".join(f"{v}: {', '.join(m)}" for v, m in groups.items()) + "."


# The provenance columns: what each file says about itself (deepfake_detector.provenance), beside the verdict.
PROVENANCE_COLUMNS = ["provenance", "provenance_kind", "provenance_hint", "provenance_strength", "provenance_signature",
                      "provenance_generator", "provenance_summary"]
BATCH_COLUMNS = ["file", "faces", "p_fake", "verdict", "model", *PROVENANCE_COLUMNS, "error"]


def score_files(detector, files):
    """Each image file as a row of BATCH_COLUMNS at the model's thresholds, with what the file says about itself
    (its provenance, never mixed into the verdict); a bad file gets its error in its row."""
    from deepfake_detector.inputs import read_image
    from deepfake_detector.provenance import read_provenance

    rows = []
    for path in files:
        row = {"file": os.path.basename(str(path)), "faces": 0, "p_fake": "", "verdict": "", "model": detector.name,
               **dict.fromkeys(PROVENANCE_COLUMNS, ""), "error": ""}
        try:
            img = read_image(path)
        except DataError as e:
            rows.append(dict(row, error=str(e)))
            continue
        scored = score_faces(detector, img)
        rows.append(dict(row, faces=scored.face_count, p_fake=round(scored.worst, 4),
                         verdict=verdict(scored.worst, scored.thresholds), **provenance_row(read_provenance(path))))
    return rows


def provenance_row(p):
    """A provenance.Provenance as the PROVENANCE_COLUMNS of a batch row."""
    return {"provenance": p.label, "provenance_kind": p.kind, "provenance_hint": p.hint,
            "provenance_strength": p.strength, "provenance_signature": p.signature,
            "provenance_generator": p.generator, "provenance_summary": p.summary}
