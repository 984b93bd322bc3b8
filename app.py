"""The Gradio app (the Hugging Face Space): is this face real or generated? Detect, compare, explain, look inside.

    python app.py                      # http://127.0.0.1:7860, on the models of hub/models.json
    python app.py --model xception=runs/xception --model tuned-cnn=runs/tuned-cnn     # on your own runs

Layout (as gradio's `demo/blocks_xray`): plain functions first — `detect`, `compare`, `explain_lime`,
`explain_gradcam`, `inside_model`, `video`, `batch`, `model_cards`, each taking the loaded `detectors` first —
then `build_demo(models)`, one `gr.Blocks` with a tab per feature and an `api_name` on every event. Models
are found by `hub.pull.load_models` (Hub, else cache, else the folders shipped in models/) and loaded once,
through `train.evaluate.load_pipeline` like everywhere else. Every image goes through `train.data.load_image`,
so a bad upload gets one clear sentence (`gr.Error`), never a stack trace. `build_demo` takes any
{name: folder}, so tests run the app on tiny models; `app.demo` (for `gradio app.py`) is built on first use.
"""

import argparse
import base64
import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

import explain
from faces import crop_face, detect_faces, face_in_crop
from train.data import DataError, load_image
from train.evaluate import load_pipeline, pipeline_fake_probability, verdict

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
MIN_SIDE = 32  # below this a face has too few pixels to judge (the smallest model input is 48-128 px)
SHOW_MAX_SIDE = 1280  # annotated images are sent back at most this large
LIME_SAMPLES = (20, 1000, explain.LIME_SAMPLES)  # slider min, max, default
VIDEO_MAX_MB, VIDEO_MAX_SECONDS, VIDEO_MAX_FRAMES = 50, 60, 3600  # 3600 = 60 s at 60 fps
VIDEO_SAMPLES = (4, 64, 16)
BATCH_MAX_FILES = 100
LICENCE = ("CC BY-NC 4.0 — non-commercial use only: the real training faces are FFHQ (CC BY-NC-SA 4.0), "
           "the StyleGAN fakes CC BY-NC 4.0, the CIPLab composites research-only")
COLOURS = {"fake": (220, 38, 38), "real": (22, 163, 74), "uncertain": (217, 119, 6)}
# Two requests at a time: the Space has 2 CPU cores and each request uses both. LIME, video and batch also have
# their own limit of one (concurrency_id), so they cannot starve quick detections.
QUEUE_OPTIONS = {"default_concurrency_limit": 2, "max_size": 64}
LAUNCH_OPTIONS = {"theme": gr.themes.Soft(), "max_file_size": "200mb"}  # 200 MB: our own limits say it better
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Models


@dataclass
class Detector:
    name: str
    classifier: object  # transformers image-classification pipeline
    path: str
    source: str  # hub, cache, embedded, or "local folder" for a path given directly
    repo_id: str | None = None
    metrics: dict = field(default_factory=dict)
    card: str = ""  # the folder's README.md, when it has one

    @property
    def thresholds(self):
        """Verdict thresholds on P(fake) from metrics.json; 0.5/0.5 (no "uncertain") when it has none."""
        t = self.metrics.get("thresholds") or {}
        return {"fake": float(t.get("fake", 0.5)), "real": float(t.get("real", 0.5))}


def load_detectors(models, repo_ids=None):
    """{name: folder or hub.pull.ResolvedModel} -> {name: Detector}, each pipeline loaded once."""
    detectors = {}
    for name, model in models.items():
        path = str(getattr(model, "path", model))
        start = time.perf_counter()
        metrics = _read_json(os.path.join(path, "metrics.json"))
        card_path = os.path.join(path, "README.md")
        card = Path(card_path).read_text(encoding="utf-8") if os.path.isfile(card_path) else ""
        classifier = load_pipeline(path)
        classifier(Image.new("RGB", (64, 64), (128, 128, 128)))  # warm up: the first call is several times slower
        detectors[name] = Detector(name, classifier, path, getattr(model, "source", "local folder"),
                                   (repo_ids or {}).get(name), metrics, card)
        logger.info("loaded %s from %s in %.1f s", name, path, time.perf_counter() - start)
    return detectors


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def default_model(detectors):
    """The model with the best test AUC in its metrics.json (the first one when none says)."""
    return max(detectors, key=lambda name: (detectors[name].metrics.get("test") or {}).get("auc") or 0.0)


# ---------------------------------------------------------------------------------------------------------
# Input checks: one clear sentence each


def fail(message):
    """A gr.Error the user sees as is; not logged with a traceback, it is the user's input, not our bug."""
    return gr.Error(message, print_exception=False)


def read_image(image):
    """An upload (path, bytes or PIL) as an RGB PIL image, or a gr.Error saying what is wrong with it."""
    if isinstance(image, dict):  # gr.Image's raw payload: image events skip gradio's preprocessing (build_demo)
        image = image.get("path") or _data_url_bytes(image.get("url"))
    if image is None:
        raise fail("No image: upload, paste or take a photo (or click an example) first.")
    try:
        img = load_image(image)
    except DataError as e:
        raise fail(str(e)) from None
    if min(img.size) < MIN_SIDE:
        raise fail(f"The image is only {img.width}x{img.height} pixels: upload one at least {MIN_SIDE} pixels "
                   "on each side.")
    return img


def _data_url_bytes(url):
    if not (url or "").startswith("data:"):
        return None
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except ValueError:
        raise fail("The pasted image could not be decoded: save it to a file and upload that.") from None


def choose(detectors, name):
    if name not in detectors:
        raise fail(f"Unknown model {name!r}: choose one of {', '.join(detectors)}.")
    return detectors[name]


def check_thresholds(fake_threshold, real_threshold):
    fake_threshold, real_threshold = float(fake_threshold), float(real_threshold)
    if not (0.0 <= real_threshold <= fake_threshold <= 1.0):
        raise fail(f"The thresholds must satisfy 0 ≤ real ({real_threshold:.2f}) ≤ fake ({fake_threshold:.2f}) "
                   "≤ 1: move the sliders so the fake threshold is not below the real one.")
    return {"fake": fake_threshold, "real": real_threshold}


def check_range(value, low, high, what):
    if value is None or not (low <= float(value) <= high):
        raise fail(f"{what} must be between {low} and {high} (got {value}).")
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# Scoring faces and drawing them


def score(detector, images):
    """P(fake) of each image and the milliseconds the model took."""
    start = time.perf_counter()
    p_fake = pipeline_fake_probability(detector.classifier, images)
    return p_fake, (time.perf_counter() - start) * 1000


def faces_and_crops(img):
    faces = detect_faces(img)
    return faces, [crop_face(img, face.box) for face in faces]


def draw_faces(img, faces, p_fake, verdicts, max_side=SHOW_MAX_SIDE):
    """A copy of `img` (at most `max_side` px) with a box and "n: verdict P(fake)" label per face."""
    scale = min(1.0, max_side / max(img.size))
    out = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR) if scale < 1 else img.copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 200))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 32)))
    for number, (face, p, v) in enumerate(zip(faces, p_fake, verdicts), start=1):
        colour = COLOURS[v]
        x0, y0, x1, y1 = (round(c * scale) for c in face.box)
        label = f"{'whole image' if face.whole_image else number}: {v} {p:.2f}"
        if not face.whole_image:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        height = bottom - top + 2 * line
        y = y0 - height if y0 - height >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((x0, y, x0 + right - left + 2 * line, y + height), fill=colour)
        draw.text((x0 + line - left, y + line - top), label, fill="white", font=font)
    return out


def _verdict_text(v, p):
    return f"**{v.upper()}** (P(fake) = {p:.2f})"


# ---------------------------------------------------------------------------------------------------------
# The features, as plain functions


def detect(detectors, image, model_name, fake_threshold, real_threshold):
    """Every face in the image scored by one model -> (annotated image, summary markdown, per-face table)."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    thresholds = check_thresholds(fake_threshold, real_threshold)
    start = time.perf_counter()
    faces, crops = faces_and_crops(img)
    detect_ms = (time.perf_counter() - start) * 1000
    p_fake, model_ms = score(detector, crops)
    verdicts = [verdict(p, thresholds) for p in p_fake]
    if faces[0].whole_image:
        lines = [f"No face found: the whole image was scored — {_verdict_text(verdicts[0], p_fake[0])}. The models "
                 "were trained on face crops, so this verdict is less reliable."]
    elif len(faces) == 1:
        lines = [f"1 face: {_verdict_text(verdicts[0], p_fake[0])}"]
    else:
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("fake", "real", "uncertain") if v in verdicts)
        lines = [f"{len(faces)} faces: {counts}", ""]
        lines += [f"- face {i}: {_verdict_text(v, p)}" for i, (v, p) in enumerate(zip(verdicts, p_fake), start=1)]
    lines += ["", f"Model **{detector.name}** · fake if P(fake) ≥ {thresholds['fake']:.2f}, real if ≤ "
              f"{thresholds['real']:.2f}, uncertain between · face detection {detect_ms:.0f} ms, model "
              f"{model_ms:.0f} ms"]
    table = pd.DataFrame({
        "face": ["whole image" if f.whole_image else str(i) for i, f in enumerate(faces, start=1)],
        "box (x0, y0, x1, y1)": [str(f.box) for f in faces],
        "face confidence": [round(f.confidence, 3) for f in faces],
        "P(fake)": np.round(p_fake, 4), "verdict": verdicts,
    })
    return draw_faces(img, faces, p_fake, verdicts), "\n".join(lines), table


def _main_face(img, with_region=False):
    """The crop of the largest face (the whole image when there is none) and how to say which it is; with
    `with_region`, also the face's box inside the crop (None for the whole image)."""
    faces, crops = faces_and_crops(img)
    note = "the whole image (no face found)" if faces[0].whole_image else (
        "the face" if len(faces) == 1 else f"the largest of {len(faces)} faces")
    if with_region:
        return crops[0], note, None if faces[0].whole_image else face_in_crop(img.size, faces[0].box)
    return crops[0], note


def compare(detectors, image):
    """The image's main face through every model -> (summary markdown, bar-plot data, table)."""
    crop, what = _main_face(read_image(image))
    rows = []
    for detector in detectors.values():
        p_fake, ms = score(detector, [crop])
        t = detector.thresholds
        rows.append({"model": detector.name, "p_fake": round(float(p_fake[0]), 4), "verdict": verdict(p_fake[0], t),
                     "latency_ms": round(ms, 1), "thresholds (fake, real)": f"{t['fake']:.2f}, {t['real']:.2f}"})
    table = pd.DataFrame(rows)
    verdicts = table["verdict"].tolist()
    if len(set(verdicts)) == 1:
        agreement = f"All {len(verdicts)} models agree: **{verdicts[0]}**."
    else:
        groups = {v: [r["model"] for r in rows if r["verdict"] == v] for v in dict.fromkeys(verdicts)}
        agreement = "The models **disagree**: " + "; ".join(f"{v}: {', '.join(m)}" for v, m in groups.items()) + "."
    summary = f"{agreement}\n\nScored {what}; each model uses its own thresholds from its metrics.json."
    return summary, table[["model", "p_fake", "verdict"]], table


INFO_LABELS = {  # what explain.py's info dicts hold, said for a reader; other keys are not shown
    "member": "explains", "fake_probability": "P(fake) of the face as the model sees it",
    "samples": "perturbed images", "fit_r2": "fit R² (low: the explanation is rough, add samples)",
    "log_odds_contribution": "contribution to the fake log-odds", "seconds": "seconds",
}


def _info_markdown(info, note):
    lines = [f"Explaining {note}."]
    for key, label in INFO_LABELS.items():
        value = (info or {}).get(key)
        if key == "member" and value == "model":  # not an ensemble: nothing to say
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:+.3f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        if value is not None:
            lines.append(f"- {label}: {value}")
    return "\n".join(lines)


def explain_lime(detectors, image, model_name, num_samples=explain.LIME_SAMPLES, progress=gr.Progress()):
    """LIME on the main face -> (overlay, markdown). More samples: steadier regions, proportionally slower."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    num_samples = check_range(num_samples, LIME_SAMPLES[0], LIME_SAMPLES[1], "The number of LIME samples")
    crop, note, region = _main_face(img, with_region=True)
    overlay, info = explain.lime_explanation(detector.classifier, crop, num_samples=num_samples, progress=progress,
                                             region=region)
    return overlay, _info_markdown(info, note)


def explain_gradcam(detectors, image, model_name):
    """Grad-CAM (one backward pass) on the main face -> (gallery, markdown). For the ensemble: all members
    through its combiner, then each member's share."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    crop, note = _main_face(img)
    member_names = [name for name, _ in explain.members(detector.classifier) if name]
    gallery, infos = [], []
    for member in [None, *member_names]:
        heatmap, info = explain.grad_cam(detector.classifier, crop, member=member)
        gallery.append((heatmap, detector.name if member is None and not member_names
                        else f"{detector.name}: {info['member']}"))
        infos.append(info)
    return gallery, "\n\n".join(_info_markdown(info, note) for info in infos)


def layer_choices(detectors, model_name):
    """The layer picker for a model: its convolutional stages by readable name, a middle one picked."""
    names = list(explain.conv_stages(choose(detectors, model_name).classifier))
    return gr.Dropdown(choices=names, value=names[len(names) // 2] if names else None, label="Layer")


def inside_model(detectors, image, model_name, layer_name):
    """What one layer sees (its most active feature maps) and where several layers look -> (two images)."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    stages = explain.conv_stages(detector.classifier)
    if layer_name not in stages:
        raise fail(f"{detector.name} has no layer {layer_name!r}: pick one of {', '.join(stages)}.")
    crop, _ = _main_face(img)
    return (explain.feature_maps(detector.classifier, crop, layer_name, top_k=16),
            explain.layer_overlay(detector.classifier, crop))


# ---- video ------------------------------------------------------------------------------------------------


def read_video_frames(path, count):
    """`count` frames spread evenly over a clip, as [(seconds, RGB PIL image)], or a gr.Error on a bad clip."""
    if path is None:
        raise fail("No video: upload a short clip (MP4, WebM, MOV or AVI) first.")
    name = os.path.basename(str(path))
    size = os.path.getsize(path)
    if size == 0:
        raise fail(f"{name} is empty (0 bytes): upload a video file such as MP4 or WebM.")
    if size > VIDEO_MAX_MB * 1e6:
        raise fail(f"{name} is {size / 1e6:.0f} MB, over the {VIDEO_MAX_MB} MB limit: trim or compress the clip.")
    try:
        times, duration = _frame_times(path, name)
        start = times[0]
        if duration > VIDEO_MAX_SECONDS:
            raise fail(f"{name} is {duration:.0f} s long, over the {VIDEO_MAX_SECONDS}-second limit: trim it.")
        if len(times) > VIDEO_MAX_FRAMES:
            raise fail(f"{name} has {len(times)} frames, over the {VIDEO_MAX_FRAMES}-frame limit: trim it or lower "
                       "its frame rate.")
        picks = sorted({times[min(len(times) - 1, int((i + 0.5) * len(times) / count))] for i in range(count)})
        frames = []
        with av.open(str(path)) as container:  # every frame is decoded (the picked ones depend on those before)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            wanted = iter(picks)
            target = next(wanted)
            for frame in container.decode(stream):
                if frame.pts is None or float(frame.pts * frame.time_base) < target:
                    continue
                frames.append((float(frame.pts * frame.time_base) - start, _frame_image(frame)))
                if (target := next(wanted, None)) is None:
                    break
    except gr.Error:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise fail(f"{name} is not a video that can be read, or it is corrupt: upload an MP4, WebM, MOV or AVI "
                   "clip.") from None
    if not frames:
        raise fail(f"{name} is corrupt: none of its frames could be decoded; upload another copy of the clip.")
    return frames


def _frame_image(frame, max_side=SHOW_MAX_SIDE):
    """A decoded frame as an RGB PIL image, at most `max_side` px (64 sampled 4K frames would take 1.6 GB)."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    if scale < 1:
        frame = frame.reformat(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)),
                               format="rgb24")
    return frame.to_image()


def _frame_times(path, name):
    """(when each frame is shown, the clip's duration) in seconds, from its packets alone (nothing decoded)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise fail(f"{name} has no video track: upload a video clip.")
        stream = container.streams.video[0]
        times = sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None)
        if not times:
            raise fail(f"{name} holds no video frames: upload another copy of the clip.")
        # What a player shows as the length; the span of the frame times when the container does not say.
        duration = container.duration / av.time_base if container.duration else times[-1] - times[0]
    return times, duration


def video(detectors, path, model_name, frames=VIDEO_SAMPLES[2], top_k=3, progress=gr.Progress()):
    """Sample frames, find faces, score each -> (summary, P(fake)-over-time data, per-frame table, top frames).

    A frame's score is its most suspicious face (the highest P(fake)); the clip's score is the mean of its
    `top_k` most suspicious frames: a fake may show in a few frames only, which an average over all frames
    would wash out, while the single worst frame alone is noisy.
    """
    detector = choose(detectors, model_name)
    count = check_range(frames, VIDEO_SAMPLES[0], VIDEO_SAMPLES[1], "The number of frames")
    top_k = check_range(top_k, 1, count, "Top-k")
    progress(0.0, desc="Reading the video")
    sampled = read_video_frames(path, count)
    owners, crops, found = [], [], []
    for index, (_, frame) in enumerate(progress.tqdm(sampled, desc="Finding faces")):
        faces, frame_crops = faces_and_crops(frame)
        found.append(faces)
        owners += [index] * len(frame_crops)
        crops += frame_crops
    progress(0.9, desc="Scoring")
    p_faces, _ = score(detector, crops)
    owners = np.array(owners)
    thresholds = detector.thresholds
    frame_p = np.array([p_faces[owners == i].max() for i in range(len(sampled))])
    rows = pd.DataFrame({
        "time_s": [round(t, 2) for t, _ in sampled],
        "faces": [0 if f[0].whole_image else len(f) for f in found],
        "p_fake": np.round(frame_p, 4),
        "verdict": [verdict(p, thresholds) for p in frame_p],
    })
    top_k = min(top_k, len(sampled))
    worst = np.argsort(-frame_p, kind="stable")[:top_k]
    clip_p = float(frame_p[worst].mean())
    clip_verdict = verdict(clip_p, thresholds)
    no_face = int((rows["faces"] == 0).sum())
    summary = [f"Clip: {_verdict_text(clip_verdict, clip_p)} — mean P(fake) of the {top_k} most suspicious of "
               f"{len(sampled)} sampled frames, model **{detector.name}** (fake if ≥ {thresholds['fake']:.2f}, "
               f"real if ≤ {thresholds['real']:.2f})."]
    if no_face:
        summary.append(f"No face found in {no_face} frame(s): those were scored as whole frames.")
    gallery = []
    for i in sorted(worst):
        p_face = p_faces[owners == i]
        annotated = draw_faces(sampled[i][1], found[i], p_face, [verdict(p, thresholds) for p in p_face], max_side=640)
        gallery.append((annotated, f"{sampled[i][0]:.1f} s · P(fake) {frame_p[i]:.2f}"))
    return "\n\n".join(summary), rows[["time_s", "p_fake"]], rows, gallery


# ---- batch, cards ------------------------------------------------------------------------------------------

CSV_COLUMNS = ["file", "faces", "p_fake", "verdict", "model", "error"]


def batch(detectors, files, model_name, progress=gr.Progress()):
    """Many images -> (summary, table, CSV path). A bad file gets its error in its row; the rest are scored."""
    detector = choose(detectors, model_name)
    files = [f for f in (files or []) if f]
    if not files:
        raise fail("No files: upload one or more images.")
    if len(files) > BATCH_MAX_FILES:
        raise fail(f"{len(files)} files is over the {BATCH_MAX_FILES}-file limit: split them into smaller batches.")
    rows = []
    for path in progress.tqdm(files, desc="Scoring"):
        path = getattr(path, "name", path)  # gr.File may give tempfile wrappers
        row = {"file": os.path.basename(str(path)), "faces": 0, "p_fake": "", "verdict": "", "model": detector.name,
               "error": ""}
        try:
            img = read_image(path)
        except gr.Error as e:
            rows.append(dict(row, error=e.message))
            continue
        faces, crops = faces_and_crops(img)
        p_fake, _ = score(detector, crops)
        worst = float(p_fake.max())  # an image is as suspicious as its most suspicious face
        rows.append(dict(row, faces=0 if faces[0].whole_image else len(faces), p_fake=round(worst, 4),
                         verdict=verdict(worst, detector.thresholds)))
    folder = tempfile.mkdtemp(prefix="deepfake-batch-")
    csv_path = os.path.join(folder, "verdicts.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("fake", "real", "uncertain") if v in counts)
    errors = int((table["error"] != "").sum())
    summary = (f"{len(rows)} files with **{detector.name}**: {summary or 'none scored'}"
               + (f"; {errors} could not be read (see the error column)." if errors else "."))
    return summary, table, csv_path


def _section(markdown, title):
    """The body of the `## title` section of a markdown document ('' when absent)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL)
    return match.group(1).strip() if match else ""


def _number(value, digits=3):
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def model_cards(detectors):
    """One section per model: where it was loaded from, test metrics, data, licence, limitations, Hub link."""
    from hub.card import model_card

    parts = [f"Licence of every model: {LICENCE}. A score is a probability, not proof: keep a person in the loop."]
    for d in detectors.values():
        m, test = d.metrics, d.metrics.get("test") or {}
        link = f"[{d.repo_id}](https://huggingface.co/{d.repo_id})" if d.repo_id else "not on the Hub"
        datasets = ", ".join((m.get("data") or {}).get("datasets") or []) or "not recorded"
        counts = (m.get("data") or {}).get("counts") or {}
        images = sum(sum(v for v in c.values() if isinstance(v, (int, float))) for c in counts.values())
        t = d.thresholds
        rows = [
            ("Loaded from", f"{d.source} (`{d.path}`)"), ("Hub", link),
            ("Architecture", f"{m.get('architecture', '–')}, {m.get('image_size', '–')} px input"),
            ("Test accuracy / ROC-AUC", f"{_number(test.get('accuracy'))} / {_number(test.get('auc'))} "
                                        f"on {test.get('n', '–')} images"),
            ("Calibration error (ECE) after temperature scaling", _number(test.get("ece_after"))),
            ("Verdict thresholds", f"fake if P(fake) ≥ {t['fake']:.2f}, real if ≤ {t['real']:.2f}"),
            ("Training data", f"{datasets} ({images} images)" if images else datasets),
            ("CPU time per image", f"{_number((m.get('inference') or {}).get('cpu_ms_per_image'), 1)} ms"),
        ]
        limitations = _section(d.card, "Limitations") or _section(model_card(m), "Limitations")
        table = ["| about the model | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
        parts.append("\n".join([f"## {d.name}", "", *table, "", "### Limitations", "", limitations]))
    return "\n\n".join(parts)


# ---- images out --------------------------------------------------------------------------------------------

IMAGE_DIR = Path(tempfile.gettempdir()) / "deepfake-app-images"
IMAGE_MAX_AGE_S = 3600
_last_prune = [0.0]


def image_file(img):
    """`img` as a WebP file named by its content, written atomically; files older than an hour are removed.

    Why not return the PIL image: gradio saves each distinct output image to one cache file, rewriting it in
    place, so two requests with the same answer at once (the same example clicked twice) can serve a half-written
    file. A returned path is copied into gradio's cache atomically instead.
    """
    buffer = io.BytesIO()
    img.save(buffer, format="WEBP", quality=90)
    path = IMAGE_DIR / f"{hashlib.sha256(buffer.getvalue()).hexdigest()[:32]}.webp"
    if not path.exists():
        IMAGE_DIR.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        staging.write_bytes(buffer.getvalue())
        os.replace(staging, path)
    else:
        with contextlib.suppress(OSError):
            os.utime(path)  # in use again: not old, whatever its first use
    now = time.time()
    if now - _last_prune[0] > IMAGE_MAX_AGE_S / 6:
        _last_prune[0] = now
        for old in IMAGE_DIR.iterdir():
            with contextlib.suppress(OSError):  # another process may have removed it first
                if now - old.stat().st_mtime > IMAGE_MAX_AGE_S:
                    old.unlink()
    return str(path)


def _images_as_files(value):
    if isinstance(value, Image.Image):
        return image_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_images_as_files(item) for item in value)
    return value


def event(function, detectors):
    """`function` with the detectors bound, as a gradio event handler: output images go out as files."""
    bound = functools.partial(function, detectors)

    @functools.wraps(bound)  # gradio reads the signature (parameter names, the gr.Progress default) through this
    def handler(*args, **kwargs):
        return _images_as_files(bound(*args, **kwargs))

    return handler


# ---------------------------------------------------------------------------------------------------------
# The layout


HOW_VERDICT = ("**How to read the verdict.** The model gives a calibrated probability that a face is fake. At "
               "or above the *fake* threshold the verdict is **fake**, at or below the *real* threshold **real**, "
               "between them **uncertain**. The defaults come from each model's validation set: each verdict was "
               "right at least 85 % of the time there, or as often as a weaker model manages (its card says how "
               "often). Faces are found with MTCNN and cropped with "
               "a margin like the training images; with no face the whole image is scored, less reliably. The models "
               "were trained on StyleGAN faces and Photoshop composites: expect poor scores on other fakes.")
HOW_VIDEO = (f"Frames are sampled evenly over the clip (≤ {VIDEO_MAX_SECONDS} s, ≤ {VIDEO_MAX_MB} MB, ≤ "
             f"{VIDEO_MAX_FRAMES} frames). Each frame scores as its most suspicious face. **Clip verdict = mean "
             "P(fake) of the top-k most suspicious frames**: a fake may show in a few frames only, which an "
             "average over all frames would wash out, while the single worst frame alone is noisy. The "
             "thresholds are the image ones; taking the top frames pushes the score up, so read a *fake* clip "
             "verdict near the threshold with care.")
HOW_LIME = (f"**Samples trade time for steadiness**: each is one pass through the model, so {LIME_SAMPLES[2]} take a "
            "few seconds on the Space's CPU, 1000 about ten times longer; fewer give a rougher picture.")


def image_input(label="Photo with a face"):
    return gr.Image(label=label, type="filepath", sources=["upload", "clipboard", "webcam"], height=320)


def examples_for(component):
    if EXAMPLES:
        gr.Examples(examples=[[p] for p in EXAMPLES], inputs=[component], cache_examples=False, label="Examples")


def model_picker(detectors, label="Model"):
    return gr.Dropdown(choices=list(detectors), value=default_model(detectors), label=label)


def build_demo(models, *, repo_ids=None):
    """The app for {name: model folder or ResolvedModel}; pass `repo_ids` {name: Hub id} for the Hub links."""
    detectors = load_detectors(models, repo_ids)
    if not detectors:
        raise ValueError("build_demo needs at least one model")
    # Events that take an image skip gradio's preprocessing: gr.Image would open the upload with PIL itself
    # and answer a non-image, empty or corrupt file with a bare "Error"; `read_image` says what is wrong.
    raw = {"preprocess": False}
    start = default_model(detectors)
    # delete_cache: the files gradio keeps of uploads and answers go after an hour (checked every 10 minutes).
    with gr.Blocks(title="Deepfake face detector", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# Is this face real or generated?\nThree detectors trained on face photos, StyleGAN faces and "
                    "Photoshop composites — with their reasons. A score is a probability, not proof.")

        with gr.Tab("Detect"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    model = model_picker(detectors)
                    t = detectors[start].thresholds
                    fake_t = gr.Slider(0, 1, value=t["fake"], step=0.01,
                                       label="Fake threshold: P(fake) ≥ this → fake")
                    real_t = gr.Slider(0, 1, value=t["real"], step=0.01,
                                       label="Real threshold: P(fake) ≤ this → real")
                    run = gr.Button("Detect", variant="primary")
                    examples_for(image)
                with gr.Column():
                    annotated = gr.Image(label="Faces and verdicts", type="filepath")
                    summary = gr.Markdown(elem_id="detect-summary")
                    table = gr.Dataframe(label="Per face", interactive=False)
            gr.Markdown(HOW_VERDICT)
            model.change(event(model_thresholds, detectors), [model], [fake_t, real_t], api_name="thresholds")
            run.click(event(detect, detectors), [image, model, fake_t, real_t], [annotated, summary, table],
                      api_name="detect", **raw)

        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    run = gr.Button("Compare all models", variant="primary")
                    examples_for(image)
                with gr.Column():
                    summary = gr.Markdown()
                    plot = gr.BarPlot(x="model", y="p_fake", color="verdict", y_lim=[0, 1], y_title="P(fake)",
                                      color_map={v: "#%02x%02x%02x" % c for v, c in COLOURS.items()},
                                      label="P(fake) per model")
                    table = gr.Dataframe(label="Models", interactive=False)
            run.click(event(compare, detectors), [image], [summary, plot, table], api_name="compare", **raw)

        with gr.Tab("Explain"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    model = model_picker(detectors)
                    samples = gr.Slider(*LIME_SAMPLES[:2], value=LIME_SAMPLES[2], step=10, label="LIME samples",
                                        info="More: steadier explanation, proportionally slower.")
                    with gr.Row():
                        run_lime = gr.Button("LIME", variant="primary")
                        run_cam = gr.Button("Grad-CAM")
                    examples_for(image)
                with gr.Column():
                    lime_image = gr.Image(label="LIME", type="filepath")
                    lime_info = gr.Markdown()
                    gr.Markdown(HOW_LIME + "\n\n" + explain.HOW_TO_READ["lime"])
                with gr.Column():
                    cam_images = gr.Gallery(label="Grad-CAM", columns=3, height=320, object_fit="contain")
                    cam_info = gr.Markdown()
                    gr.Markdown(explain.HOW_TO_READ["grad_cam"])
            run_lime.click(event(explain_lime, detectors), [image, model, samples], [lime_image, lime_info],
                           api_name="explain_lime", concurrency_limit=1, concurrency_id="lime", **raw)
            run_cam.click(event(explain_gradcam, detectors), [image, model], [cam_images, cam_info],
                          api_name="explain_gradcam", **raw)

        with gr.Tab("Inside the model"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    model = model_picker(detectors)
                    layer = layer_choices(detectors, start)
                    run = gr.Button("Look inside", variant="primary")
                    examples_for(image)
                with gr.Column():
                    maps = gr.Image(label="Most active feature maps of the layer", type="filepath")
                    gr.Markdown(explain.HOW_TO_READ["feature_maps"])
                    overlay = gr.Image(label="Where each stage looks, overlaid on the face", type="filepath")
            model.change(event(layer_choices, detectors), [model], [layer], api_name="layers")
            run.click(event(inside_model, detectors), [image, model, layer], [maps, overlay], api_name="inside_model",
                      **raw)

        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label=f"Short clip (≤ {VIDEO_MAX_SECONDS} s, ≤ {VIDEO_MAX_MB} MB)",
                                    sources=["upload"], height=280)
                    model = model_picker(detectors)
                    frames = gr.Slider(*VIDEO_SAMPLES[:2], value=VIDEO_SAMPLES[2], step=1, label="Frames to sample")
                    top_k = gr.Slider(1, VIDEO_SAMPLES[1], value=3, step=1, label="Top-k suspicious frames averaged")
                    run = gr.Button("Analyse video", variant="primary")
                with gr.Column():
                    summary = gr.Markdown()
                    plot = gr.LinePlot(x="time_s", y="p_fake", y_lim=[0, 1], x_title="time (s)", y_title="P(fake)",
                                       label="P(fake) over time")
                    suspicious = gr.Gallery(label="Most suspicious frames", columns=3, height=240, object_fit="contain")
                    table = gr.Dataframe(label="Frames", interactive=False)
            gr.Markdown(HOW_VIDEO)
            run.click(event(video, detectors), [clip, model, frames, top_k], [summary, plot, table, suspicious],
                      api_name="video", concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Batch"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(label=f"Images (up to {BATCH_MAX_FILES})", file_count="multiple", type="filepath")
                    model = model_picker(detectors)
                    run = gr.Button("Score all", variant="primary")
                with gr.Column():
                    summary = gr.Markdown()
                    download = gr.File(label="verdicts.csv")
            table = gr.Dataframe(label="Verdicts (model's default thresholds)", interactive=False)
            run.click(event(batch, detectors), [files, model], [summary, table, download], api_name="batch",
                      concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Models"):
            cards = gr.Markdown(model_cards(detectors))
        demo.load(event(model_cards, detectors), None, [cards], api_name="model_cards")
    return demo


def model_thresholds(detectors, model_name):
    """The Detect sliders' defaults for a model: its (fake, real) thresholds."""
    t = choose(detectors, model_name).thresholds
    return t["fake"], t["real"]


# ---------------------------------------------------------------------------------------------------------
# Running it


def shipped_models():
    """({name: ResolvedModel}, {name: Hub id}) for the models of hub/models.json: Hub, else cache, else models/."""
    from hub.pull import load_models, read_config

    return load_models(), {entry.name: entry.repo_id for entry in read_config() if entry.repo_id}


def __getattr__(name):
    # `gradio app.py` (reload mode) looks for `demo`; importing app.py in tests must not load the shipped models.
    if name == "demo":
        models, repo_ids = shipped_models()
        globals()["demo"] = build_demo(models, repo_ids=repo_ids).queue(**QUEUE_OPTIONS)
        return globals()["demo"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", metavar="NAME=FOLDER",
                        help="Serve this model folder (repeat for several); default: the models of hub/models.json")
    parser.add_argument("--host", help="Address to listen on (default 127.0.0.1; Spaces set 0.0.0.0 themselves)")
    parser.add_argument("--port", type=int, help="Port (default 7860, or the next free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.model:
        if not all("=" in spec for spec in args.model):
            parser.error("--model takes NAME=FOLDER, e.g. --model xception=runs/xception")
        models, repo_ids = dict(spec.split("=", 1) for spec in args.model), {}
    else:
        models, repo_ids = shipped_models()
    if not models:
        from hub.pull import read_config

        names = ", ".join(entry.name for entry in read_config())
        sys.exit(f"No model found: hub/models.json lists {names}, but none resolved from the Hub, the local cache "
                 "or models/. Connect to the Hub, copy trained model folders into models/, or pass "
                 "--model NAME=FOLDER (e.g. --model xception=runs/xception).")
    demo = build_demo(models, repo_ids=repo_ids).queue(**QUEUE_OPTIONS)
    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
