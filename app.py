"""The Gradio app (the Hugging Face Space): is this face real or generated? Detect, compare, explain, look inside.

    python app.py                      # http://127.0.0.1:7860, on the models of models/models.json
    python app.py --model xception=runs/xception --model tuned-cnn=runs/tuned-cnn     # on your own runs

Layout (as gradio's `demo/blocks_xray`): thin handlers first — `detect`, `compare`, `explain_lime`,
`explain_gradcam`, `inside_model`, `video`, `batch`, `model_cards`, each taking the loaded `detectors` first —
then `build_demo(models)`, one `gr.Blocks` with a tab per feature and an `api_name` on every event. The work
they call lives in the core (`deepfake_detector`): models load once through `inference.load_detectors`, every
upload goes through `inputs.read_image`, and a `DataError` anywhere becomes a `gr.Error` with its one sentence,
never a stack trace. `build_demo` takes any {name: folder}, so tests run the app on tiny models; `app.demo`
(for `gradio app.py`) is built on first use.
"""

import argparse
import functools
import logging
import re
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from deepfake_detector import explain
from deepfake_detector.images import DataError
from deepfake_detector.inference import (BATCH_COLUMNS, agreement, choose, compare_models, default_model,
                                         load_detectors, main_face, score_faces, score_files, verdict)
from deepfake_detector.inputs import BATCH_MAX_FILES, check_files, check_range, check_thresholds, read_image
from deepfake_detector.render import COLOURS, draw_faces, images_as_files, info_markdown, write_csv
from deepfake_detector.video import (VIDEO_MAX_FRAMES, VIDEO_MAX_MB, VIDEO_MAX_SECONDS, read_video_frames,
                                     score_video)

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
LIME_SAMPLES = (20, 1000, explain.LIME_SAMPLES)  # slider min, max, default
VIDEO_SAMPLES = (4, 64, 16)
# Two requests at a time: the Space has 2 CPU cores and each request uses both. LIME, video and batch also have
# their own limit of one (concurrency_id), so they cannot starve quick detections.
QUEUE_OPTIONS = {"default_concurrency_limit": 2, "max_size": 64}
LAUNCH_OPTIONS = {"theme": gr.themes.Soft(), "max_file_size": "200mb"}  # 200 MB: our own limits say it better
LICENCE = ("CC BY-NC 4.0 — non-commercial use only: the real training faces are FFHQ (CC BY-NC-SA 4.0), "
           "the StyleGAN fakes CC BY-NC 4.0, the CIPLab composites research-only")
logger = logging.getLogger(__name__)


def user_errors(function):
    """A DataError (the user's input, said in one sentence) as the gr.Error the user sees, without a traceback."""
    @functools.wraps(function)  # gradio reads the signature (parameter names, the gr.Progress default) through this
    def handler(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DataError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return handler


def _verdict_text(v, p):
    return f"**{v.upper()}** (P(fake) = {p:.2f})"


# ---------------------------------------------------------------------------------------------------------
# The features, as thin handlers over the core


@user_errors
def detect(detectors, image, model_name, fake_threshold, real_threshold):
    """Every face in the image scored by one model -> (annotated image, summary markdown, per-face table)."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    s = score_faces(detector, img, check_thresholds(fake_threshold, real_threshold))
    if s.faces[0].whole_image:
        lines = [f"No face found: the whole image was scored — {_verdict_text(s.verdicts[0], s.p_fake[0])}. The "
                 "models were trained on face crops, so this verdict is less reliable."]
    elif len(s.faces) == 1:
        lines = [f"1 face: {_verdict_text(s.verdicts[0], s.p_fake[0])}"]
    else:
        counts = ", ".join(f"{s.verdicts.count(v)} {v}" for v in ("fake", "real", "uncertain") if v in s.verdicts)
        lines = [f"{len(s.faces)} faces: {counts}", ""]
        lines += [f"- face {i}: {_verdict_text(v, p)}" for i, (v, p) in enumerate(zip(s.verdicts, s.p_fake), start=1)]
    lines += ["", f"Model **{detector.name}** · fake if P(fake) ≥ {s.thresholds['fake']:.2f}, real if ≤ "
              f"{s.thresholds['real']:.2f}, uncertain between · face detection {s.detect_ms:.0f} ms, model "
              f"{s.model_ms:.0f} ms"]
    table = pd.DataFrame({
        "face": ["whole image" if f.whole_image else str(i) for i, f in enumerate(s.faces, start=1)],
        "box (x0, y0, x1, y1)": [str(f.box) for f in s.faces],
        "face confidence": [round(f.confidence, 3) for f in s.faces],
        "P(fake)": np.round(s.p_fake, 4), "verdict": s.verdicts,
    })
    return draw_faces(img, s.faces, s.p_fake, s.verdicts), "\n".join(lines), table


@user_errors
def compare(detectors, image):
    """The image's main face through every model -> (summary markdown, bar-plot data, table)."""
    crop, what = main_face(read_image(image))
    rows = compare_models(detectors, crop)
    table = pd.DataFrame(rows)
    summary = f"{agreement(rows)}\n\nScored {what}; each model uses its own thresholds from its config.json."
    return summary, table[["model", "p_fake", "verdict"]], table


@user_errors
def explain_lime(detectors, image, model_name, num_samples=explain.LIME_SAMPLES, progress=gr.Progress()):
    """LIME on the main face -> (overlay, markdown). More samples: steadier regions, proportionally slower."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    num_samples = check_range(num_samples, LIME_SAMPLES[0], LIME_SAMPLES[1], "The number of LIME samples")
    crop, note, region = main_face(img, with_region=True)
    overlay, info = explain.lime_explanation(detector.classifier, crop, num_samples=num_samples, progress=progress,
                                             region=region)
    return overlay, info_markdown(info, note)


@user_errors
def explain_gradcam(detectors, image, model_name):
    """Grad-CAM (one backward pass) on the main face -> (gallery, markdown). For the ensemble: all members
    through its combiner, then each member's share."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    crop, note = main_face(img)
    member_names = [name for name, _ in explain.members(detector.classifier) if name]
    gallery, infos = [], []
    for member in [None, *member_names]:
        heatmap, info = explain.grad_cam(detector.classifier, crop, member=member)
        gallery.append((heatmap, detector.name if member is None and not member_names
                        else f"{detector.name}: {info['member']}"))
        infos.append(info)
    return gallery, "\n\n".join(info_markdown(info, note) for info in infos)


@user_errors
def layer_choices(detectors, model_name):
    """The layer picker for a model: its convolutional stages by readable name, a middle one picked."""
    names = list(explain.conv_stages(choose(detectors, model_name).classifier))
    return gr.Dropdown(choices=names, value=names[len(names) // 2] if names else None, label="Layer")


@user_errors
def inside_model(detectors, image, model_name, layer_name):
    """What one layer sees (its most active feature maps) and where several layers look -> (two images)."""
    img = read_image(image)
    detector = choose(detectors, model_name)
    stages = explain.conv_stages(detector.classifier)
    if layer_name not in stages:
        raise DataError(f"{detector.name} has no layer {layer_name!r}: pick one of {', '.join(stages)}.")
    crop, _ = main_face(img)
    return (explain.feature_maps(detector.classifier, crop, layer_name, top_k=16),
            explain.layer_overlay(detector.classifier, crop))


@user_errors
def video(detectors, path, model_name, frames=VIDEO_SAMPLES[2], top_k=3, progress=gr.Progress()):
    """Sample frames, find faces, score each -> (summary, P(fake)-over-time data, per-frame table, top frames).
    See deepfake_detector/video.py for why the clip's score is the mean of its `top_k` most suspicious frames."""
    detector = choose(detectors, model_name)
    count = check_range(frames, VIDEO_SAMPLES[0], VIDEO_SAMPLES[1], "The number of frames")
    top_k = check_range(top_k, 1, count, "Top-k")
    progress(0.0, desc="Reading the video")
    v = score_video(detector, read_video_frames(path, count), top_k, progress)
    rows = pd.DataFrame({
        "time_s": [round(t, 2) for t in v.times],
        "faces": [0 if f[0].whole_image else len(f) for f in v.faces],
        "p_fake": np.round(v.frame_p_fake, 4),
        "verdict": v.frame_verdicts,
    })
    t = v.thresholds
    summary = [f"Clip: {_verdict_text(v.verdict, v.clip_p_fake)} — mean P(fake) of the {len(v.worst)} most "
               f"suspicious of {len(v.times)} sampled frames, model **{detector.name}** (fake if ≥ {t['fake']:.2f}, "
               f"real if ≤ {t['real']:.2f})."]
    if v.frames_without_face:
        summary.append(f"No face found in {v.frames_without_face} frame(s): those were scored as whole frames.")
    gallery = []
    for i in sorted(v.worst):
        verdicts = [verdict(p, t) for p in v.face_p_fake[i]]
        annotated = draw_faces(v.frames[i], v.faces[i], v.face_p_fake[i], verdicts, max_side=640)
        gallery.append((annotated, f"{v.times[i]:.1f} s · P(fake) {v.frame_p_fake[i]:.2f}"))
    return "\n\n".join(summary), rows[["time_s", "p_fake"]], rows, gallery


@user_errors
def batch(detectors, files, model_name, progress=gr.Progress()):
    """Many images -> (summary, table, CSV path). A bad file gets its error in its row; the rest are scored."""
    detector = choose(detectors, model_name)
    rows = score_files(detector, progress.tqdm(check_files(files), desc="Scoring"))
    table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("fake", "real", "uncertain") if v in counts)
    errors = int((table["error"] != "").sum())
    summary = (f"{len(rows)} files with **{detector.name}**: {summary or 'none scored'}"
               + (f"; {errors} could not be read (see the error column)." if errors else "."))
    return summary, table, write_csv(rows, BATCH_COLUMNS)


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


def event(function, detectors):
    """`function` with the detectors bound, as a gradio event handler: output images go out as files."""
    bound = functools.partial(function, detectors)

    @functools.wraps(bound)  # gradio reads the signature (parameter names, the gr.Progress default) through this
    def handler(*args, **kwargs):
        return images_as_files(bound(*args, **kwargs))

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


@user_errors
def model_thresholds(detectors, model_name):
    """The Detect sliders' defaults for a model: its (fake, real) thresholds."""
    t = choose(detectors, model_name).thresholds
    return t["fake"], t["real"]


# ---------------------------------------------------------------------------------------------------------
# Running it


def shipped_models():
    """({name: ResolvedModel}, {name: Hub id}) for the models of models/models.json: Hub, else cache, else models/."""
    from deepfake_detector.registry import load_models, read_config

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
                        help="Serve this model folder (repeat for several); default: the models of models/models.json")
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
        from deepfake_detector.registry import read_config

        names = ", ".join(entry.name for entry in read_config())
        sys.exit(f"No model found: models/models.json lists {names}, but none resolved from the Hub, the local cache "
                 "or models/. Connect to the Hub, copy trained model folders into models/, or pass "
                 "--model NAME=FOLDER (e.g. --model xception=runs/xception).")
    demo = build_demo(models, repo_ids=repo_ids).queue(**QUEUE_OPTIONS)
    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
