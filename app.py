"""The Gradio app (the Hugging Face Space): is this face real or generated? Detect, compare, explain, look inside.

    python app.py                      # http://127.0.0.1:7860, on the models of models/models.json
    python app.py --model xception=runs/xception --model tuned-cnn=runs/tuned-cnn     # on your own runs

Layout (as gradio's `demo/blocks_xray`): thin handlers first — `detect`, `provenance`, `compare`, `explain_lime`,
`explain_gradcam`, `inside_model`, `video`, `batch`, `model_cards`, each taking the loaded `detectors` first —
then `build_demo(models)`, one `gr.Blocks` with a tab per feature and an `api_name` on every event. Every
endpoint is also an MCP tool for AI agents (`launch(mcp_server=True)`), described by its handler's docstring. The
file's own account of its origin (`provenance`: C2PA credentials, generator metadata) is shown beside the pixel
verdict and never changes it, so the image events hand the core the uploaded file itself, not decoded pixels. The work
they call lives in the core (`deepfake_detector`): models load once through `inference.load_detectors`, every
upload goes through `inputs.read_image`, summaries, tables and help texts come from `report`, and a `DataError`
anywhere becomes a `gr.Error` with its one sentence, never a stack trace. `build_demo` takes any {name: folder},
so tests run the app on tiny models; `app.demo` (for `gradio app.py`) is built on first use.
"""

import argparse
import functools
import logging
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData, GradioModel, GradioRootModel

from deepfake_detector import explain
from deepfake_detector.card import models_markdown
from deepfake_detector.examples import read_manifest
from deepfake_detector.images import DataError
from deepfake_detector.inference import (BATCH_COLUMNS, choose, compare_models, default_model, load_detectors,
                                         load_in_background, main_face, score_faces, score_files)
from deepfake_detector.inputs import (BATCH_MAX_FILES, check_files, check_range, check_thresholds, frame_count,
                                      read_image, upload_source)
from deepfake_detector.provenance import read_provenance
from deepfake_detector.render import (compare_chart, draw_scored, images_as_files, info_markdown, stack_images,
                                      suspicious_frames, write_csv)
from deepfake_detector.report import (BATCH_TABLE, COMPARE_COLUMNS, DETECT_COLUMNS, HOW_PROVENANCE, HOW_VERDICT,
                                      HOW_VIDEO, VIDEO_COLUMNS, batch_summary, compare_summary, detect_summary,
                                      lime_help, provenance_markdown, video_summary)
from deepfake_detector.video import VIDEO_MAX_MB, VIDEO_MAX_SECONDS, read_video_frames, score_video

ROOT = Path(__file__).resolve().parent
EXAMPLES, EXAMPLE_CLIP = read_manifest(ROOT / "examples")  # held-out test images with their captions (examples.json)
LIME_SAMPLES = (explain.LIME_MIN_SAMPLES, 1000, explain.LIME_SAMPLES)  # slider min, max, default of an untimed model
# Each model's LIME time as bench/bench_app.py measured it: the slider's default follows the model, to fit ~5 s.
LIME_TIMING = ROOT / "bench" / "lime_timing.json"
VIDEO_SAMPLES = (4, 64, 16)
# Two requests at a time: the Space has 2 CPU cores and each request uses both. LIME, video and batch also have
# their own limit of one (concurrency_id), so they cannot starve quick detections.
QUEUE_OPTIONS = {"default_concurrency_limit": 2, "max_size": 64}
# 200 MB: our own limits say it better. mcp_server: every public endpoint is also an MCP tool for AI agents, at
# /gradio_api/mcp/ (streamable HTTP) and /gradio_api/mcp/sse; each handler's docstring is its tool description.
LAUNCH_OPTIONS = {"theme": gr.themes.Soft(), "max_file_size": "200mb", "mcp_server": True}
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


# ---------------------------------------------------------------------------------------------------------
# The features, as thin handlers over the core


# The docstrings below are also the MCP tool descriptions an AI agent reads (gradio parses Args: and Returns:).
# Each Returns: is one long line: gradio joins the lines after it with commas.


@user_errors
def detect(detectors, image, model_name, fake_threshold, real_threshold):
    """Judge whether each face in a photo is real or AI-generated / manipulated (a deepfake), and read what the file
    says about its own origin.

    Every face is found, cropped and scored by one detector model: a calibrated P(fake) and a verdict (fake, real
    or uncertain) at two thresholds. Separately, the file's content credentials (C2PA, with their signature
    checked) and generator metadata (Stable Diffusion / ComfyUI parameters, IPTC digital source type, EXIF) are
    read. The verdict comes from the pixels alone; the provenance is reported beside it and never changes it.
    Absence of metadata proves nothing. A score is a probability, not proof.

    Args:
        image: The photo, as the original file (URL or base64 data URL): re-encoding it loses its credentials.
        model_name: Which detector to use; model_cards describes them (default: the one with the best test AUC).
        fake_threshold: P(fake) at or above which a face is called fake (model_thresholds gives the model's own).
        real_threshold: P(fake) at or below which a face is called real; between the two it is uncertain.

    Returns:
        the photo with each face boxed and labelled, a markdown summary of the verdicts, a table with one row per face, the provenance in plain words, and the provenance as JSON (kind, hint, strength, signature, summary, details with c2pa's validation status).
    """
    source = upload_source(image)
    img = read_image(source)
    detector = choose(detectors, model_name)
    s = score_faces(detector, img, check_thresholds(fake_threshold, real_threshold))
    summary, table = detect_summary(s, detector, frame_count(image))
    p = read_provenance(source)
    return draw_scored(img, s.faces, s.p_fake, s.thresholds), summary, table, provenance_markdown(p, s.verdicts), \
        p.as_dict()


@user_errors
def provenance(detectors, image):
    """Read what an image file says about its own origin, without any model: C2PA content credentials (signer, claim
    generator, actions, IPTC digital source type, and whether the signature validates) and generator metadata
    (Stable Diffusion / ComfyUI PNG parameters, XMP, EXIF).

    Signature is "valid" (validates, trusted certificate), "untrusted" (validates, unknown certificate: who signed
    is not verified), "invalid" (changed after signing, damaged or forged) or "none". Unsigned metadata is easily
    added or removed, and most sites strip it: no metadata proves nothing. Use detect for the pixel verdict.

    Args:
        image: The original image file (URL or base64 data URL); a screenshot or re-encoded copy has lost it all.

    Returns:
        the provenance in plain words (markdown), and as JSON: kind, hint (ai-generated, ai-edited, edited, camera, unknown), strength (none, weak, moderate, strong), signature, summary, generator, signer, details.
    """
    p = read_provenance(upload_source(image))
    return provenance_markdown(p), p.as_dict()


@user_errors
def compare(detectors, image):
    """Score the main face of a photo with every detector model at once and say whether they agree (real, fake or
    uncertain each).

    Args:
        image: The photo (URL or base64 data URL); the largest face is used, the whole image when none is found.

    Returns:
        a markdown summary of the agreement, a bar chart of P(fake) per model, and a table (model, P(fake), verdict, its thresholds, time), the most suspicious first.
    """
    crop, what = main_face(read_image(image))
    summary, rows, table = compare_summary(compare_models(detectors, crop), detectors, what, frame_count(image))
    return summary, compare_chart(rows), table


@user_errors
def explain_lime(detectors, image, model_name, num_samples=None, progress=gr.Progress()):
    """Explain a detector's verdict on the main face with LIME: which regions of the face push it towards fake or real.

    Slow: each sample is one pass through the model (the default takes about 5 s on the Space's CPU). For a quick
    map, use explain_gradcam.

    Args:
        image: The photo (URL or base64 data URL); the largest face is explained.
        model_name: Which detector to explain.
        num_samples: Perturbed images to score (20 to 1000): more is steadier and proportionally slower. None: the model's own default, as many as take about 5 s on the Space (20 to 64).

    Returns:
        the face with the regions that raise P(fake) and those that lower it marked, and markdown with P(fake), the fit's R² and the time.
    """
    img = read_image(image)
    detector = choose(detectors, model_name)
    if num_samples is None:
        num_samples = explain.default_lime_samples(explain.read_lime_timing(LIME_TIMING), detector.name)
    num_samples = check_range(num_samples, LIME_SAMPLES[0], LIME_SAMPLES[1], "The number of LIME samples")
    crop, note, region = main_face(img, with_region=True)
    overlay, info = explain.lime_explanation(detector.classifier, crop, num_samples=num_samples, progress=progress,
                                             region=region)
    return overlay, info_markdown(info, note)


@user_errors
def explain_gradcam(detectors, image, model_name):
    """Explain a detector's verdict on the main face with Grad-CAM (one backward pass, fast): a heat map of where the
    model looked when it scored the face as fake.

    For the ensemble: all members through its combiner, then each member's share.

    Args:
        image: The photo (URL or base64 data URL); the largest face is explained.
        model_name: Which detector to explain.

    Returns:
        a gallery of heat maps over the face (one per ensemble member after the combined one), and markdown with P(fake) and each member's contribution.
    """
    img = read_image(image)
    detector = choose(detectors, model_name)
    crop, note = main_face(img)
    gallery, infos = explain.grad_cam_gallery(detector.classifier, crop, detector.name)
    return gallery, "\n\n".join(info_markdown(info, note) for info in infos)


@user_errors
def inside_model(detectors, image, model_name, layer_name):
    """Show what one layer of a detector sees on the main face (its most active feature maps) and where each stage
    looks.

    Args:
        image: The photo (URL or base64 data URL); the largest face is used.
        model_name: Which detector to look inside.
        layer_name: One of stem, stage 1, stage 2, stage 3, stage 4 (valid for every model).

    Returns:
        an image of the layer's most active feature maps (one block per ensemble member), and an overlay of where every stage looks on the face.
    """
    img = read_image(image)
    detector = choose(detectors, model_name)
    crop, _ = main_face(img)
    maps = explain.feature_maps_at_depth(detector.classifier, crop, layer_name, name=detector.name)
    return stack_images(maps), explain.layer_overlay(detector.classifier, crop)


@user_errors
def video(detectors, path, model_name, frames=VIDEO_SAMPLES[2], top_k=3, progress=gr.Progress()):
    """Judge whether a short video clip (at most 60 s, 50 MB) shows a real or a deepfake face, frame by frame.

    Frames are sampled evenly, each scored as its most suspicious face; the clip's P(fake) is the mean of its top_k
    most suspicious frames (a fake may show in a few frames only; see deepfake_detector/video.py).

    Args:
        path: The clip (URL or base64 data URL): MP4, WebM, MOV or AVI.
        model_name: Which detector to use.
        frames: How many frames to sample (4 to 64).
        top_k: How many of the most suspicious frames are averaged into the clip's score (1 to frames).

    Returns:
        a markdown summary with the clip's verdict, P(fake) over time, a table per frame, and the most suspicious frames with faces boxed.
    """
    detector = choose(detectors, model_name)
    count = check_range(frames, VIDEO_SAMPLES[0], VIDEO_SAMPLES[1], "The number of frames")
    top_k = check_range(top_k, 1, count, "Top-k")
    progress(0.0, desc="Reading the video")
    v = score_video(detector, read_video_frames(path, count), top_k, progress)
    return *video_summary(v, detector), suspicious_frames(v)


@user_errors
def batch(detectors, files, model_name, progress=gr.Progress()):
    """Score many images at once (up to 100): each file's verdict at the model's default thresholds, and what each file
    says about its own origin (content credentials, generator metadata), in separate columns.

    A file that cannot be read gets its error in its row; the rest are scored.

    Args:
        files: The image files (URLs or base64 data URLs).
        model_name: Which detector to use.

    Returns:
        a markdown summary, a table (file, faces, P(fake), verdict, model, what the file says, problem), and a CSV with the same rows and every provenance field (kind, hint, strength, signature, generator, summary).
    """
    detector = choose(detectors, model_name)
    rows = score_files(detector, progress.tqdm(check_files(files), desc="Scoring"))
    return *batch_summary(rows, detector), write_csv(rows, BATCH_COLUMNS)


def model_cards(detectors):
    """Describe the detector models this app serves: their names, where each was loaded from, test metrics, training
    data, licence, limitations and Hub links.

    Returns:
        markdown with one column per model and the limitations they share.
    """
    return models_markdown(detectors.values())


def event(function, detectors):
    """`function` with the detectors bound, as a gradio event handler: output images go out as files."""
    bound = functools.partial(function, detectors)

    @functools.wraps(bound)  # gradio reads the signature (parameter names, the gr.Progress default) through this
    def handler(*args, **kwargs):
        return images_as_files(bound(*args, **kwargs))

    # A partial has no name or docstring of its own: the MCP tool is named and described by the function's.
    handler.__name__, handler.__qualname__, handler.__doc__ = function.__name__, function.__name__, function.__doc__
    return handler


# ---------------------------------------------------------------------------------------------------------
# The layout


class _VideoAndSubtitles(GradioModel):
    video: FileData
    subtitles: FileData | None = None


class _ClipPayload(GradioRootModel):
    root: FileData | _VideoAndSubtitles


class ClipInput(gr.Video):
    """gr.Video that also takes its {"video": file, "subtitles": ...} form from API callers. gradio 6 validates
    a Video input as a bare file and answers that form with a pydantic error; `view_api` now lists both forms."""
    data_model = _ClipPayload

    def get_block_name(self):
        return "video"  # the browser draws it with gradio's own video component

    def preprocess(self, payload):
        if payload is None:
            return None
        payload = payload.root if isinstance(payload, _ClipPayload) else payload
        return super().preprocess(payload.video if isinstance(payload, _VideoAndSubtitles) else payload)


def image_input(label="Photo with a face"):
    return gr.Image(label=label, type="filepath", sources=["upload", "clipboard", "webcam"], height=320)


def about_example():
    return gr.Textbox(label="About this example", interactive=False, lines=1, max_lines=3,
                      placeholder="Click an example below: its truth and source appear here.")


def examples_for(image, caption):
    """The examples, each with its caption (truth · what it is · source); clicking one fills both. An upload of
    the user's own clears the caption (it describes the example, not their photo)."""
    if EXAMPLES:
        gr.Examples(examples=[[e.path, e.caption] for e in EXAMPLES], inputs=[image, caption], cache_examples=False,
                    label="Examples: held-out test images (truth · what it is · source)", examples_per_page=10)
    image.upload(lambda: "", None, caption, api_visibility="private", queue=False)


def model_picker(detectors, label="Model"):
    return gr.Dropdown(choices=list(detectors), value=default_model(detectors), label=label)


def table(label, columns):
    """A read-only table that shows its column names before the first result (not "1 2 3")."""
    return gr.Dataframe(value=pd.DataFrame(columns=columns), headers=columns, label=label, interactive=False,
                        wrap=True)


def build_demo(models, *, repo_ids=None, load="now"):
    """The app for {name: model folder or ResolvedModel}; pass `repo_ids` {name: Hub id} for the Hub links.
    load: "now" loads every model first (tests), "background" serves the page at once and loads them behind it."""
    detectors = load_detectors(models, repo_ids, load=load)
    if not detectors:
        raise ValueError("build_demo needs at least one model")
    # Events that take an image skip gradio's preprocessing: gr.Image would open the upload with PIL itself
    # and answer a non-image, empty or corrupt file with a bare "Error"; `read_image` says what is wrong.
    raw = {"preprocess": False}
    start = default_model(detectors)
    # delete_cache: the files gradio keeps of uploads and answers go after an hour (checked every 10 minutes).
    with gr.Blocks(title="Deepfake face detector", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        demo.detectors = detectors  # main() starts loading them once the page is served
        gr.Markdown(f"# Is this face real or generated?\n{len(detectors)} detectors trained on face photos and "
                    "fakes — with their reasons. A score is a probability, not proof.")

        with gr.Tab("Detect"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    caption = about_example()
                    model = model_picker(detectors)
                    t = detectors[start].thresholds
                    fake_t = gr.Slider(0, 1, value=t["fake"], step=0.01,
                                       label="Fake threshold: P(fake) ≥ this → fake")
                    real_t = gr.Slider(0, 1, value=t["real"], step=0.01,
                                       label="Real threshold: P(fake) ≤ this → real")
                    run = gr.Button("Detect", variant="primary")
                    examples_for(image, caption)
                with gr.Column():
                    annotated = gr.Image(label="Faces and verdicts", type="filepath")
                    summary = gr.Markdown(elem_id="detect-summary")
                    faces = table("Per face", DETECT_COLUMNS)
                    credentials = gr.Markdown(elem_id="detect-provenance")
                    with gr.Accordion("What the file says, in full (JSON)", open=False):
                        credentials_json = gr.JSON(show_label=False)
            gr.Markdown(HOW_VERDICT + "\n\n" + HOW_PROVENANCE)
            model.change(event(model_thresholds, detectors), [model], [fake_t, real_t], api_name="thresholds")
            run.click(event(detect, detectors), [image, model, fake_t, real_t],
                      [annotated, summary, faces, credentials, credentials_json], api_name="detect", **raw)
            # An upload's credentials at once, before (and without) any model: reading them takes milliseconds.
            image.upload(event(provenance, detectors), [image], [credentials, credentials_json], api_name="provenance",
                         queue=False, **raw)

        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    caption = about_example()
                    run = gr.Button("Compare all models", variant="primary")
                    examples_for(image, caption)
                with gr.Column():
                    summary = gr.Markdown(elem_id="compare-summary")
                    chart = gr.Image(label="P(fake) per model, most suspicious first", type="filepath")
                    models_table = table("Models", COMPARE_COLUMNS)
            run.click(event(compare, detectors), [image], [summary, chart, models_table], api_name="compare", **raw)

        with gr.Tab("Explain"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    caption = about_example()
                    model = model_picker(detectors)
                    start_samples, start_help = lime_defaults(detectors, start)
                    samples = gr.Slider(*LIME_SAMPLES[:2], value=start_samples, step=1, label="LIME samples",
                                        info="More: steadier explanation, proportionally slower.")
                    with gr.Row():
                        run_lime = gr.Button("LIME", variant="primary")
                        run_cam = gr.Button("Grad-CAM")
                    examples_for(image, caption)
                with gr.Column():
                    lime_image = gr.Image(label="LIME (the face only)", type="filepath")
                    lime_info = gr.Markdown(elem_id="lime-info")
                    samples_help = gr.Markdown(start_help, elem_id="lime-help")
                    gr.Markdown(explain.HOW_TO_READ["lime"])
                with gr.Column():
                    cam_images = gr.Gallery(label="Grad-CAM", columns=3, height=320, object_fit="contain")
                    cam_info = gr.Markdown(elem_id="cam-info")
                    gr.Markdown(explain.HOW_TO_READ["grad_cam"])
            # As the Detect thresholds follow its model: the picked model's own default and its measured time.
            model.change(event(lime_defaults, detectors), [model], [samples, samples_help], api_visibility="private",
                         queue=False)
            run_lime.click(event(explain_lime, detectors), [image, model, samples], [lime_image, lime_info],
                           api_name="explain_lime", concurrency_limit=1, concurrency_id="lime", **raw)
            run_cam.click(event(explain_gradcam, detectors), [image, model], [cam_images, cam_info],
                          api_name="explain_gradcam", **raw)

        with gr.Tab("Inside the model"):
            with gr.Row():
                with gr.Column():
                    image = image_input()
                    caption = about_example()
                    model = model_picker(detectors)
                    layer = gr.Dropdown(choices=list(explain.LAYER_DEPTHS), value=explain.LAYER_DEPTHS[2],
                                        label="Layer (for an ensemble: that layer of each member)")
                    run = gr.Button("Look inside", variant="primary")
                    examples_for(image, caption)
                with gr.Column():
                    # The images carry their own captions (model, member, layer): no label badge over them.
                    gr.Markdown("**Most active feature maps of the layer**")
                    maps = gr.Image(show_label=False, type="filepath", elem_id="feature-maps")
                    gr.Markdown(explain.HOW_TO_READ["feature_maps"])
                    gr.Markdown("**Where each stage looks, overlaid on the face**")
                    overlay = gr.Image(show_label=False, type="filepath")
            run.click(event(inside_model, detectors), [image, model, layer], [maps, overlay], api_name="inside_model",
                      **raw)

        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    clip = ClipInput(label=f"Short clip (≤ {VIDEO_MAX_SECONDS} s, ≤ {VIDEO_MAX_MB} MB)",
                                    sources=["upload"], height=280)
                    caption = about_example()
                    model = model_picker(detectors)
                    frames = gr.Slider(*VIDEO_SAMPLES[:2], value=VIDEO_SAMPLES[2], step=1, label="Frames to sample")
                    top_k = gr.Slider(1, VIDEO_SAMPLES[1], value=3, step=1, label="Top-k suspicious frames averaged")
                    run = gr.Button("Analyse video", variant="primary")
                    if EXAMPLE_CLIP:
                        gr.Examples(examples=[[EXAMPLE_CLIP.path, EXAMPLE_CLIP.caption]], inputs=[clip, caption],
                                    cache_examples=False, label="Example clip")
                    clip.upload(lambda: "", None, caption, api_visibility="private", queue=False)
                with gr.Column():
                    summary = gr.Markdown(elem_id="video-summary")
                    plot = gr.LinePlot(x="seconds", y="fake_probability", y_lim=[0, 1], x_title="time (s)",
                                       y_title="P(fake)", label="P(fake) over time")
                    suspicious = gr.Gallery(label="Most suspicious frames", columns=3, height=240, object_fit="contain")
                    frames_table = table("Frames", VIDEO_COLUMNS)
            gr.Markdown(HOW_VIDEO)
            run.click(event(video, detectors), [clip, model, frames, top_k], [summary, plot, frames_table, suspicious],
                      api_name="video", concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Batch"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(label=f"Images (up to {BATCH_MAX_FILES})", file_count="multiple", type="filepath")
                    model = model_picker(detectors)
                    run = gr.Button("Score all", variant="primary")
                with gr.Column():
                    summary = gr.Markdown(elem_id="batch-summary")
                    download = gr.File(label="Download the verdicts (CSV)")
            verdicts = table("Verdicts (each model's default thresholds)", list(BATCH_TABLE.values()))
            gr.Markdown(HOW_PROVENANCE)
            run.click(event(batch, detectors), [files, model], [summary, verdicts, download], api_name="batch",
                      concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Models"):
            cards = gr.Markdown(model_cards(detectors), elem_id="model-cards")
        demo.load(event(model_cards, detectors), None, [cards], api_name="model_cards")
    return demo


@user_errors
def model_thresholds(detectors, model_name):
    """Get a detector model's own verdict thresholds (chosen on its validation set), to pass to detect.

    Args:
        model_name: Which detector.

    Returns:
        the fake threshold (P(fake) at or above it: fake) and the real threshold (at or below it: real).
    """
    t = choose(detectors, model_name).thresholds
    return t["fake"], t["real"]


@user_errors
def lime_defaults(detectors, model_name):
    """The Explain tab's LIME slider value and help for a model: its budgeted default sample count (see
    explain.budgeted_samples) and the time bench/bench_app.py measured for it. The file is read on each call, so
    a refreshed bench/lime_timing.json shows without a restart."""
    name = choose(detectors, model_name).name
    timing = explain.read_lime_timing(LIME_TIMING)
    return explain.default_lime_samples(timing, name), lime_help(name, timing)


# ---------------------------------------------------------------------------------------------------------
# Running it


def __getattr__(name):
    # `gradio app.py` (reload mode) looks for `demo`; importing app.py in tests must not load the shipped models.
    if name == "demo":
        from deepfake_detector.registry import shipped_models

        models, repo_ids = shipped_models()
        globals()["demo"] = build_demo(models, repo_ids=repo_ids, load="background").queue(**QUEUE_OPTIONS)
        return globals()["demo"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None):
    from deepfake_detector.registry import none_resolved_message, shipped_models

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
        sys.exit(none_resolved_message())
    # The page first, the models behind it: loading them while gradio starts would slow both (2 cores, one GIL).
    # A request that comes before its model is loaded waits for it.
    demo = build_demo(models, repo_ids=repo_ids, load="lazy").queue(**QUEUE_OPTIONS)
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, **LAUNCH_OPTIONS)
    load_in_background(demo.detectors)
    demo.block_thread()


if __name__ == "__main__":
    main()
