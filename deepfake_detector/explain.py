"""Why did the detector say fake? LIME, Grad-CAM, feature maps and per-layer activations, as PIL images.

    from deepfake_detector.explain import lime_explanation, grad_cam, conv_stages, feature_maps, layer_overlay, HOW_TO_READ
    classifier = deepfake_detector.inference.load_pipeline("runs/xception")
    overlay, info = lime_explanation(classifier, image)          # superpixels: red pushes to fake, green to real
    overlay, info = grad_cam(classifier, image)                  # where the last conv stage sees "fake"
    grid = feature_maps(classifier, image, next(iter(conv_stages(classifier))))
    tiles = layer_overlay(classifier, image)                     # mean activation of every stage

Plain functions on a loaded `pipeline("image-classification")` (the one way models are loaded): no Gradio
here, the app wraps them. Every function explains what the model actually sees — the image after the
pipeline's own preprocessing (resize the shorter side, centre crop, at the model's input size) — and the
LIME / Grad-CAM overlays are drawn back over the uploaded image at its own aspect, the part outside the model's
crop dimmed. Works for timm models (tuned-cnn, xception) and the ensemble (per member, or all members).

Run `python bench/bench_explain.py` for timings on this machine.
"""

import contextlib
import json
import math
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps

from deepfake_detector.images import LABEL2ID, DataError, load_image, to_rgb

FAKE, REAL = LABEL2ID["fake"], LABEL2ID["real"]

# LIME defaults. The app explains the face box only (region=), cut into ~24 superpixels, so 64 samples give
# the ridge fit ~2.7 samples per unknown; on the shipped models the five strongest superpixels were the same
# at 48, 64, 100 and 200 samples (real-ffhq.jpg). Each sample is one forward pass — ~90 ms of CPU for the
# flip-TTA ensemble, ~30 ms for the Xception (one thread, 128 px) — so the default costs ~6 CPU-seconds on the
# ensemble. bench/bench_explain.py measures the wall time at several counts.
LIME_SAMPLES = 64  # the most the app offers by default, and the default of a model never timed
# The app's default for each model: as many samples as fit in LIME_BUDGET_S on the Space, at least
# LIME_MIN_SAMPLES (the slider's minimum: ~1 sample per superpixel, below which the fit is noise) and at most
# LIME_SAMPLES. bench/bench_app.py times every model it serves and writes the table (bench/lime_timing.json).
LIME_BUDGET_S = 5.0
LIME_MIN_SAMPLES = 20
LIME_SEGMENTS = 24
LIME_FEATURES = 10  # superpixels coloured in the overlay (the strongest by |weight|)
LIME_BATCH = 32
MAX_DISPLAY_SIDE = 1024  # overlays keep the upload's size up to this, then are scaled down (same aspect)

HOW_TO_READ = {
    "lime": (
        "LIME hides random sets of superpixels (patches of similar colour) and fits which ones move P(fake): "
        "red patches push the verdict toward fake, green toward real; stronger colour, stronger push.\n"
        "Only the outlined patches (the strongest) are coloured; it is a sampled estimate: more samples give a "
        "steadier picture, fewer a faster one."
    ),
    "grad_cam": (
        "Grad-CAM: warm colours mark where the last convolutional stage found evidence for fake "
        "(its activations weighted by how much they raise the fake score); blue adds nothing.\n"
        "Colours are relative within this image and coarse (1/32 of the input): they say where, not how sure; "
        "no colour at all means nothing in the image raised the fake score."
    ),
    "feature_maps": (
        "Each tile is one channel of the chosen layer — one learned pattern detector — bright where it "
        "fires; shown are the channels firing most on this image.\n"
        "Early stages respond to edges, colour and texture at full detail; later ones to larger parts at coarser "
        "resolution, which the classifier combines into its verdict."
    ),
}


# ---------------------------------------------------------------------------------------------------------
# What the model sees


def model_input(classifier, image):
    """(RGB upload, pixel_values [1, 3, H, W] from the pipeline's own processor, the same image as an
    H x W x 3 float array in [0, 1] — what the model sees)."""
    image = as_rgb(image)
    pixel_values = classifier.image_processor(images=[image], return_tensors="pt")["pixel_values"].float()
    mean, std = _normalisation(classifier)
    view = (pixel_values * std.cpu() + mean.cpu()).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return image, pixel_values.to(_device(classifier)), view


def as_rgb(image):
    """The upload as an RGB PIL image, whatever form it came in (PIL, numpy array, path, bytes)."""
    return to_rgb(Image.fromarray(np.asarray(image))) if isinstance(image, np.ndarray) else load_image(image)


def _normalisation(classifier):
    config, device = classifier.image_processor.data_config, _device(classifier)
    return (torch.tensor(config["mean"], device=device).view(1, 3, 1, 1),
            torch.tensor(config["std"], device=device).view(1, 3, 1, 1))


def _device(classifier):
    return getattr(classifier, "device", None) or torch.device("cpu")  # a pipeline knows its device


def seen_box(classifier, size):
    """The part (left, top, right, bottom) of an image of `size` (w, h) that the processor keeps: timm's eval
    transform resizes the shorter side to input_size / crop_pct and centre-crops input_size."""
    config = classifier.image_processor.data_config
    w, h = size
    if config.get("crop_mode", "center") != "center":
        return 0, 0, w, h
    input_h, input_w = config["input_size"][-2:]
    scale = min(input_h, input_w) / (config.get("crop_pct") or 1.0) / min(w, h)
    box_w, box_h = min(w, input_w / scale), min(h, input_h / scale)
    left, top = (w - box_w) / 2, (h - box_h) / 2
    return round(left), round(top), round(left + box_w), round(top + box_h)


def _fake_probability(logits):
    return float(logits.float().softmax(-1)[0, FAKE])


# ---------------------------------------------------------------------------------------------------------
# Convolutional stages


def members(classifier):
    """[(name or None, timm module)]: one unnamed entry for a timm model, one per member for the ensemble (a
    feature probe's ViT backbone for a probe member)."""
    model = classifier.model
    if hasattr(model, "timm_model"):
        return [(None, model.timm_model)]
    if hasattr(model, "members"):
        names, modules = [], []
        for i, (spec, member) in enumerate(zip(model.config.members, model.members)):
            name = spec.get("name") or spec.get("architecture") or f"member {i}"
            name = name if name not in names else f"{name} #{i + 1}"
            module = getattr(member, "backbone", member)
            if module in modules:  # probes sharing one backbone: one module, one entry, both names
                names[modules.index(module)] += f" + {name}"
                continue
            names.append(name)
            modules.append(module)
        return list(zip(names, modules))
    raise ValueError(f"{type(model).__name__} is neither a timm model nor the ensemble: nothing to explain.")


def conv_stages(classifier):
    """{readable name: module} of each convolutional stage, input to output, e.g. "stem (64 ch, 1/2)",
    "stage 1 (32 ch, 1/4)"; ensemble members' stages are prefixed with the member ("xception · stage 4 …")."""
    stages = {}
    for member_name, module in members(classifier):
        prefix = f"{member_name} · " if member_name else ""
        number = 0
        for i, (module_name, channels, reduction) in enumerate(_feature_info(classifier, module)):
            if i == 0 and reduction <= 2:
                label = "stem"
            else:
                number += 1
                label = f"stage {number}"
            stages[f"{prefix}{label} ({channels} ch, 1/{reduction})"] = module.get_submodule(module_name)
    return stages


# The layer names the app offers: every model here (timm ResNet-style, Xception, EfficientNet-Lite, and each
# ensemble member) has a stem at 1/2 resolution and four stages after it, so these resolve for any of them.
LAYER_DEPTHS = ("stem", "stage 1", "stage 2", "stage 3", "stage 4")


def stages_at_depth(classifier, depth):
    """The conv_stages names at `depth` ("stem", "stage 1", ...): one per ensemble member, one for a timm model;
    [] when the model has no such stage."""
    return [name for name in conv_stages(classifier) if name.rpartition(" · ")[2].split(" (")[0] == depth]


def _feature_info(classifier, module):
    """[(module name, channels, reduction)] from timm's `feature_info`; for a model without it, the last module
    producing a 4-D map at each resolution, found with one forward pass."""
    if getattr(module, "feature_info", None):
        return [(f["module"], f["num_chs"], f["reduction"]) for f in module.feature_info]
    size = 32 * math.ceil(classifier.image_processor.data_config["input_size"][-1] / 32)  # exact reductions
    found = {}  # reduction -> (name, channels), the last module to run at that reduction wins
    names = {m: n for n, m in module.named_modules() if n}
    with _capture(list(names)) as outputs, torch.inference_mode():
        module(torch.zeros(1, 3, size, size))
    for m, output in outputs.items():
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1:  # not pooled
            found[size // output.shape[-1]] = (names[m], output.shape[1])
    return [(name, channels, reduction) for reduction, (name, channels) in sorted(found.items())]


@contextlib.contextmanager
def _capture(modules):
    """{module: output} of `modules` during the forward passes run in the block — this thread's only, since the
    app may explain several requests on the one shared model at once. Outputs are kept in call order."""
    outputs = {}
    thread = threading.get_ident()

    def keep(module, args, output):
        if threading.get_ident() == thread:
            outputs[module] = output

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _stage(classifier, layer_name):
    stages = conv_stages(classifier)
    if layer_name not in stages:
        raise ValueError(f"Unknown layer {layer_name!r}: choose one of {', '.join(map(repr, stages))}.")
    return stages[layer_name]


def _activations(classifier, pixel_values, layer_names):
    """{layer name: activation [C, h, w] as float numpy} for one forward pass."""
    modules = {name: _stage(classifier, name) for name in layer_names}
    with _capture(list(modules.values())) as outputs, torch.inference_mode():
        classifier.model(pixel_values)
    return {name: outputs[module][0].float().cpu().numpy() for name, module in modules.items()}


# ---------------------------------------------------------------------------------------------------------
# LIME


def lime_attribution(classifier, image, *, num_samples=LIME_SAMPLES, num_segments=LIME_SEGMENTS, seed=0,
                     progress=None, region=None):
    """LIME on the model's own input: (superpixel ids H x W, {superpixel: weight toward fake}, info).

    The image is explained at the model's input size (128 px, not the upload's): SLIC superpixels are hidden
    (filled with their mean colour) in `num_samples` random combinations (the first keeps them all), the
    perturbed images go through `classifier.model` in batches as tensors, and a ridge fit of P(fake) on which
    superpixels were kept, each sample weighted by its closeness to the original, gives each superpixel a weight
    (positive: toward fake). This is `lime_image.LimeImageExplainer` with its defaults (kernel width 0.25,
    ridge alpha 1, every superpixel a feature), written out so samples are built in one array operation, it
    prints no progress bar and the part outside `region` is not a feature at all.

    `region` (left, top, right, bottom in the image's pixels, e.g. the face box): only that part is cut into
    superpixels and perturbed; everything outside stays as it is in every sample, so the weights say which part
    *of the face* moves the verdict, and fewer superpixels need fewer samples. In the returned map the outside
    has the id one past the last superpixel, and no weight.
    """
    start = time.perf_counter()
    if num_samples < 2:
        raise ValueError(f"num_samples={num_samples}: LIME needs at least 2 samples (the default is {LIME_SAMPLES}).")
    _report(progress, 0.0, "LIME: superpixels")
    image = as_rgb(image)
    view = model_input(classifier, image)[2].astype(np.float32)
    inside = region_mask(classifier, image.size, region, view.shape[:2])
    segments = superpixels(view, num_segments, mask=inside)
    count = int(segments[inside].max()) + 1
    segments = np.where(inside, segments, count)
    # Hidden superpixels take their mean colour (LIME's hide_color=None); the outside (id `count`) is never hidden.
    means = np.stack([view[segments == s].mean(0) for s in range(count)] + [np.zeros(3, np.float32)])
    fudged = means[segments]
    rng = np.random.RandomState(seed)
    kept = rng.randint(0, 2, (num_samples, count)).astype(bool)
    kept[0] = True  # the first sample is the image itself
    kept_with_outside = np.concatenate([kept, np.ones((num_samples, 1), bool)], axis=1)
    predict = _lime_predictor(classifier, num_samples, progress)
    batches = math.ceil(num_samples / LIME_BATCH)
    size = math.ceil(num_samples / batches)  # even batches, no tiny last one
    fake = np.concatenate([
        predict(np.where(kept_with_outside[i:i + size][:, segments][..., None], view, fudged))[:, FAKE]
        for i in range(0, num_samples, size)])
    coefficients, r2 = _lime_fit(kept.astype(np.float64), fake.astype(np.float64))
    info = {
        "samples": num_samples, "segments": count, "seconds": round(time.perf_counter() - start, 3),
        "fake_probability": predict.first_fake_probability, "fit_r2": round(r2, 3),
        "model_input": list(view.shape[:2]), "region": "whole input" if inside.all() else "face",
    }
    return segments, {s: float(w) for s, w in enumerate(coefficients)}, info


def budgeted_samples(seconds_per_sample, budget_s=LIME_BUDGET_S):
    """The LIME default for a model taking `seconds_per_sample`: floor(budget / seconds per sample), clamped to
    LIME_MIN_SAMPLES..LIME_SAMPLES (so a heavy model may go over the budget rather than give a useless fit)."""
    return min(max(math.floor(budget_s / seconds_per_sample), LIME_MIN_SAMPLES), LIME_SAMPLES)


def read_lime_timing(path):
    """bench/lime_timing.json as {"budget_s", "machine", "date", "models": {name: entry}}; each entry holds
    seconds_per_sample, p50_s (and p95_s, runs) measured at measured_at_samples, and samples, the default
    `budgeted_samples` gives it under this file's budget (recomputed here, so the table cannot disagree with
    the rule). A missing or unreadable file gives no models. The first format, one entry for the model timed at
    the app's default ({"samples": 64, "model": "ensemble", "p50_s": 3.9, ...}), is read as that one model
    measured at that count."""
    try:
        with open(path) as f:
            timing = json.load(f)
    except (OSError, ValueError):
        timing = {}
    if not isinstance(timing, dict):
        timing = {}
    if "models" not in timing and {"model", "samples", "p50_s"} <= set(timing):
        measured = {"measured_at_samples": timing["samples"], "p50_s": timing["p50_s"],
                    **{k: timing[k] for k in ("p95_s", "runs") if k in timing}}
        timing = {**timing, "models": {timing["model"]: measured}}
    budget_s = float(timing.get("budget_s", LIME_BUDGET_S))
    models = {}
    for name, entry in (timing.get("models") or {}).items():
        try:
            seconds_per_sample = float(entry.get("seconds_per_sample") or entry["p50_s"] / entry["measured_at_samples"])
        except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):
            continue  # an entry without a usable time: that model is untimed
        if not seconds_per_sample > 0:
            continue
        models[name] = {**entry, "seconds_per_sample": seconds_per_sample,
                        "samples": budgeted_samples(seconds_per_sample, budget_s)}
    return {"budget_s": budget_s, "machine": timing.get("machine"), "date": timing.get("date"), "models": models}


def default_lime_samples(timing, name):
    """The app's LIME default for model `name` from `read_lime_timing`'s table; LIME_SAMPLES when it was not timed."""
    entry = timing["models"].get(name)
    return entry["samples"] if entry else LIME_SAMPLES


def _lime_fit(kept, target, kernel_width=0.25, alpha=1.0):
    """LIME's local model: ridge regression (alpha 1, free intercept) of `target` on the 0/1 `kept` matrix, each
    sample weighted by sqrt(exp(-d^2 / width^2)), d its cosine distance to the all-kept sample. -> (coefficients,
    weighted R^2 of the fit), what sklearn's Ridge(alpha).fit(..., sample_weight).coef_ / .score give."""
    norms = np.linalg.norm(kept, axis=1)
    cosine = kept.sum(1) / np.maximum(norms * np.sqrt(kept.shape[1]), 1e-12)
    distance = np.where(norms > 0, 1 - cosine, 1.0)
    weight = np.sqrt(np.exp(-(distance ** 2) / kernel_width ** 2))
    x_mean = weight @ kept / weight.sum()
    y_mean = weight @ target / weight.sum()
    x, y = kept - x_mean, target - y_mean
    coefficients = np.linalg.solve((x.T * weight) @ x + alpha * np.eye(kept.shape[1]), (x.T * weight) @ y)
    residual = y - x @ coefficients
    total = weight @ y ** 2
    return coefficients, float(1 - (weight @ residual ** 2) / total) if total > 0 else 0.0


def region_mask(classifier, size, region, view_shape):
    """Where `region` (left, top, right, bottom in an image of `size`) falls in the model's input, as an H x W
    boolean mask; everything when `region` is None or covers the whole crop the model sees."""
    h, w = view_shape
    if region is None:
        return np.ones((h, w), dtype=bool)
    left, top, right, bottom = seen_box(classifier, size)
    sx, sy = w / (right - left), h / (bottom - top)
    x0, y0 = max(0, math.floor((region[0] - left) * sx)), max(0, math.floor((region[1] - top) * sy))
    x1, y1 = min(w, math.ceil((region[2] - left) * sx)), min(h, math.ceil((region[3] - top) * sy))
    mask = np.zeros((h, w), dtype=bool)
    if x1 - x0 < 4 or y1 - y0 < 4:  # the face is (almost) outside what the model sees: explain all of it
        mask[:] = True
    mask[y0:y1, x0:x1] = True
    return mask


def superpixels(view, num_segments=LIME_SEGMENTS, mask=None):
    """SLIC superpixels of an H x W x 3 float image, numbered 0..n-1 (LIME indexes its features by them);
    with a boolean `mask`, only the pixels inside it are segmented (the others get 0 and should be ignored)."""
    from skimage.segmentation import slic

    if mask is None or mask.all():
        segments = slic(view, n_segments=num_segments, compactness=10, start_label=0)
    else:
        segments = slic(view, n_segments=num_segments, compactness=10, start_label=1, mask=mask)
        segments = np.where(mask, segments, segments[mask].min())
    return np.unique(segments, return_inverse=True)[1].reshape(segments.shape)


def _lime_predictor(classifier, num_samples, progress):
    """N x H x W x 3 floats in [0, 1] -> N x labels probabilities, via the model; reports progress."""
    mean, std = _normalisation(classifier)
    done = 0

    def predict(images):
        nonlocal done
        # NHWC -> NCHW as a view is channels_last memory, which CPU convolutions run ~30 % faster on.
        x = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2).to(mean.device)
        with torch.inference_mode():
            probabilities = classifier.model((x - mean) / std).logits.float().softmax(-1).cpu().numpy()
        if done == 0:  # LIME's first sample is the unperturbed image
            predict.first_fake_probability = float(probabilities[0, FAKE])
        done += len(images)
        _report(progress, 0.05 + 0.9 * done / num_samples, f"LIME: {done}/{num_samples} perturbed images")
        return probabilities

    predict.first_fake_probability = None
    return predict


def lime_explanation(classifier, image, *, num_samples=LIME_SAMPLES, num_features=LIME_FEATURES, progress=None,
                     seed=0, region=None):
    """LIME overlay over the upload (RGB, its aspect): red superpixels push toward fake, green toward real.

    num_samples trades time for noise: each sample is one forward pass of the model (flip TTA makes the
    ensemble's two), so time grows in proportion (bench/bench_explain.py measures it); fewer samples give noisier
    weights (the fit's R² in info drops, the top superpixels change with `seed`). Keep several samples per
    superpixel: under about 2 the ridge fit has fewer samples than unknowns.
    region: explain only this box (left, top, right, bottom in the image's pixels, e.g. the face box); the rest
    is neither perturbed nor coloured, and is washed out like the part the model does not see.
    num_features: how many superpixels (the strongest by |weight|) to colour. `progress(fraction, desc)` is
    called as it goes (e.g. gr.Progress()). info: samples, segments, seconds, fake_probability (of the image as
    the model sees it), fit_r2, model_input [h, w], region, and `weights` of the coloured superpixels.
    """
    image = as_rgb(image)
    segments, weights, info = lime_attribution(classifier, image, num_samples=num_samples, seed=seed,
                                               progress=progress, region=region)
    shown = sorted(weights, key=lambda s: -abs(weights[s]))[:num_features]
    strongest = max((abs(weights[s]) for s in shown), default=0.0) or 1.0
    signed = np.zeros(len(weights) + 1)  # the extra last entry: outside the model's crop
    for s in shown:
        signed[s] = weights[s] / strongest
    display = _display(image)
    box = _scale_box(seen_box(classifier, image.size), image.size, display.size)
    ids = _paste_nearest(segments, box, display.size, fill=len(weights))
    value = signed[ids]
    colour = np.where(value[..., None] > 0, [220, 30, 30], [20, 190, 60]).astype(np.float32)
    alpha = np.where(value != 0, 0.2 + 0.45 * np.abs(value), 0.0)
    explained = _scale_box(_intersect(seen_box(classifier, image.size), region), image.size, display.size)
    overlay = _blend(_dim_outside(display, explained), colour, alpha)
    from skimage.segmentation import find_boundaries

    outline = find_boundaries(ids, mode="inner") & np.isin(ids, shown)
    overlay[outline] = 255
    info["weights"] = {int(s): round(weights[s], 4) for s in shown}
    _report(progress, 1.0, "LIME: done")
    return Image.fromarray(overlay), info


def _report(progress, fraction, desc):
    if progress is not None:
        progress(min(fraction, 1.0), desc)


# ---------------------------------------------------------------------------------------------------------
# Grad-CAM


def grad_cam_map(classifier, image, *, member=None):
    """Grad-CAM of the fake log-odds on the last convolutional stage(s): (signed map H x W at the model's input
    size — positive where the stage found evidence for fake, negative for real — and info).

    Target: logit(fake) - logit(real), the log-odds behind P(fake), so "evidence for fake" also counts evidence
    against real. Each channel is weighted by its gradient summed over positions (Grad-CAM's mean times the
    map's area), so the map's mean is that stage's first-order contribution to the log-odds, comparable across
    members. For the ensemble the gradient flows through its combiner: a member's map is its share of the
    ensemble's decision, and the default (member=None) is the sum of all members' maps.
    """
    start = time.perf_counter()
    _, pixel_values, view = model_input(classifier, image)
    chosen = _chosen_members(classifier, member)
    last = {name: _cam_stage(classifier, name, member_module) for name, member_module in chosen}
    modules = [module for _, module in last.values()]
    # Gradients even if the caller runs under inference_mode / no_grad; the input asks for them so it works
    # whatever the parameters' requires_grad. autograd.grad leaves the parameters' .grad untouched.
    with torch.inference_mode(False), torch.enable_grad(), _capture(modules) as outputs:
        pixel_values = pixel_values.clone().requires_grad_(True)
        logits = classifier.model(pixel_values).logits
        log_odds = logits[0, FAKE] - logits[0, REAL]
        gradients = torch.autograd.grad(log_odds, [outputs[m] for m in modules])
    size = view.shape[:2]
    total = np.zeros(size, dtype=np.float32)
    contributions = {}
    for (layer, module), gradient in zip(last.values(), gradients):
        activation, gradient = _as_map(outputs[module].detach()), _as_map(gradient)
        cam = (gradient.sum((2, 3), keepdim=True) * activation).sum(1, keepdim=True)
        if len(cam) > len(pixel_values):  # an ensemble with flip_tta also ran the mirror image: mirror back, add
            cam = cam[:len(pixel_values)] + cam[len(pixel_values):].flip(-1)
        contributions[layer] = round(float(cam.mean()), 4)
        total += F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
    info = {
        "fake_probability": _fake_probability(logits.detach()),
        "target": "log-odds of fake (logit fake - logit real)",
        "member": "all members" if member is None and len(chosen) > 1 else (chosen[0][0] or "model"),
        "layers": list(contributions), "log_odds_contribution": contributions,
        "peak": round(max(float(total.max()), 0.0), 4), "seconds": round(time.perf_counter() - start, 3),
    }
    return total, info


def _cam_stage(classifier, member_name, module):
    """(name, module) whose output Grad-CAM weighs: the last stage; for a ViT pooled on its CLS token the block
    before the last, as the last block's patch tokens never reach the head (their gradient is zero); for a
    feature probe's ViT the block before the first block it (or a probe sharing it) reads, so every block read
    is downstream of the map."""
    stages = list(_member_stages(classifier, member_name).items())
    read = [layer for member in getattr(classifier.model, "members", [])
            if getattr(member, "backbone", None) is module and hasattr(member, "layers") for layer in member.layers]
    if read and min(read) > 0:
        return stages[min(min(read) - 1, len(stages) - 1)]
    is_vit = hasattr(module, "cls_token") and getattr(module, "global_pool", None) == "token"
    return stages[-2] if is_vit and len(stages) > 1 else stages[-1]


def _as_map(tensor):
    """A ViT block's tokens [B, prefix + g*g, D] as a [B, D, g, g] map (its prefix tokens dropped); conv maps as
    they are."""
    if tensor.ndim != 3:
        return tensor
    grid = math.isqrt(tensor.shape[1])
    return tensor[:, tensor.shape[1] - grid * grid:].transpose(1, 2).reshape(len(tensor), -1, grid, grid)


def _chosen_members(classifier, member):
    every = members(classifier)
    if member is None:
        return every
    if every[0][0] is None:
        raise ValueError("member= applies to the ensemble only: this model has no members.")
    names = [name for name, _ in every]
    if isinstance(member, int) and -len(every) <= member < len(every):
        return [every[member]]
    if member in names:
        return [every[names.index(member)]]
    raise ValueError(f"Unknown member {member!r}: choose an index below {len(every)} or one of {names}.")


def _member_stages(classifier, member_name):
    prefix = f"{member_name} · " if member_name else ""
    return {name: module for name, module in conv_stages(classifier).items()
            if name.startswith(prefix) and (prefix or " · " not in name)}


def grad_cam(classifier, image, *, member=None):
    """Grad-CAM overlay (jet colours) over the upload, at its aspect; for the ensemble per `member` (index or
    name) or, by default, all members combined through the ensemble's combiner. See grad_cam_map."""
    image = as_rgb(image)
    cam, info = grad_cam_map(classifier, image, member=member)
    display = _display(image)
    box = _scale_box(seen_box(classifier, image.size), image.size, display.size)
    relative = np.maximum(cam, 0) / cam.max() if cam.max() > 0 else np.zeros_like(cam)  # Grad-CAM's ReLU
    heat = _paste_bilinear(relative, box, display.size)
    colour = _colormap("jet", heat)
    overlay = _blend(_dim_outside(display, box), colour, 0.55 * heat)
    return Image.fromarray(overlay), info


def grad_cam_gallery(classifier, image, name):
    """grad_cam of the model called `name` -> ([(overlay, caption)], [info]); for the ensemble all members
    through its combiner first, then each member's share."""
    member_names = [member for member, _ in members(classifier) if member]
    gallery, infos = [], []
    for member in [None, *member_names]:
        overlay, info = grad_cam(classifier, image, member=member)
        # The member first: the gallery cuts long captions, and every caption would start with the model's name.
        caption = name if not member_names else (
            f"all members of {name}" if member is None else f"{info['member']} member of {name}")
        gallery.append((overlay, caption))
        infos.append(info)
    return gallery, infos


# ---------------------------------------------------------------------------------------------------------
# Feature maps and per-layer activations


def feature_maps(classifier, image, layer_name, *, top_k=16):
    """The model's input beside a grid of the `top_k` channels of `layer_name` (a conv_stages name) with the
    highest mean activation, each min-max scaled on its own, upsampled (nearest: true resolution) and coloured."""
    _, pixel_values, view = model_input(classifier, image)
    activation = _activations(classifier, pixel_values, [layer_name])[layer_name]
    channels = np.argsort(-activation.mean((1, 2)), kind="stable")[:top_k]
    tile, gap, caption = 72, 4, 14
    columns = math.ceil(math.sqrt(len(channels)))
    rows = math.ceil(len(channels) / columns)
    grid_h = rows * (tile + caption + gap) - gap
    side = max(grid_h, 160)
    header = 34
    canvas = Image.new("RGB", (side + gap * 4 + columns * (tile + gap) - gap, header + side), "white")
    canvas.paste(_to_pil(view).resize((side, side), Image.BICUBIC), (0, header))
    draw = ImageDraw.Draw(canvas)
    h, w = activation.shape[1:]
    draw.text((2, 2), layer_name, fill="black", font=_font(12))
    draw.text((2, 17), f"the {len(channels)} most active of {activation.shape[0]} channels, {h}x{w} each",
              fill="black", font=_font(11))
    for i, c in enumerate(channels):
        x = side + gap * 4 + (i % columns) * (tile + gap)
        y = header + (i // columns) * (tile + caption + gap)
        draw.text((x, y), f"ch {c}", fill="black", font=_font(11))
        values = _min_max(activation[c])
        cell = Image.fromarray(_colormap("viridis", values).astype(np.uint8)).resize((tile, tile), Image.NEAREST)
        canvas.paste(cell, (x, y + caption))
    return canvas


def feature_maps_at_depth(classifier, image, depth, *, name="The model", top_k=16):
    """feature_maps of every stage at `depth` (one of LAYER_DEPTHS; one stage per ensemble member), or a DataError
    naming the depths there are."""
    stages = stages_at_depth(classifier, depth)
    if not stages:
        raise DataError(f"{name} has no layer {depth!r}: pick one of {', '.join(LAYER_DEPTHS)}.")
    return [feature_maps(classifier, image, stage, top_k=top_k) for stage in stages]


def layer_overlay(classifier, image, layer_names=None):
    """The mean activation (over channels) of each layer, upsampled and overlaid on the model's input, tiled
    with labels; default every stage (conv_stages), one row per ensemble member."""
    _, pixel_values, view = model_input(classifier, image)
    layer_names = list(layer_names or conv_stages(classifier))
    activations = _activations(classifier, pixel_values, layer_names)
    rows = {}
    for name in layer_names:
        member, _, stage = name.rpartition(" · ")
        rows.setdefault(member, []).append((stage, name))
    tile, gap, caption = 160, 6, 32
    base = _to_pil(view).resize((tile, tile), Image.BICUBIC)
    base_rgb = np.asarray(base, dtype=np.float32)
    width = max(len(row) + 1 for row in rows.values()) * (tile + gap) - gap
    canvas = Image.new("RGB", (width, len(rows) * (tile + caption + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (member, row) in enumerate(rows.items()):
        y = r * (tile + caption + gap)
        tiles = [([member, "model input"] if member else ["model input", f"{len(view)}x{len(view[0])} px"], base)]
        for stage, name in row:
            mean = torch.from_numpy(activations[name].mean(0))[None, None]
            heat = _min_max(F.interpolate(mean, size=(tile, tile), mode="bilinear", align_corners=False)[0, 0].numpy())
            label, _, shape = stage.partition(" (")  # "stage 2", "64 ch, 1/8)"
            tiles.append(([label, f"({shape}" if shape else ""],
                          Image.fromarray(_blend(base_rgb, _colormap("inferno", heat), 0.6))))
        for i, (lines, picture) in enumerate(tiles):
            x = i * (tile + gap)
            for k, line in enumerate(lines):
                draw.text((x + 2, y + 2 + 14 * k), line, fill="black", font=_font(11))
            canvas.paste(picture, (x, y + caption))
    return canvas


# ---------------------------------------------------------------------------------------------------------
# Drawing


def _display(image):
    """The upload at its own size, or scaled down to MAX_DISPLAY_SIDE on its longer side."""
    if max(image.size) <= MAX_DISPLAY_SIDE:
        return image
    return ImageOps.contain(image, (MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE), Image.BILINEAR)


def _scale_box(box, size, display_size):
    sx, sy = display_size[0] / size[0], display_size[1] / size[1]
    left, top, right, bottom = box
    return round(left * sx), round(top * sy), max(round(right * sx), round(left * sx) + 1), \
        max(round(bottom * sy), round(top * sy) + 1)


def _intersect(box, region):
    """The part of `box` inside `region` (both left, top, right, bottom); `box` when region is None or they
    do not overlap."""
    if region is None:
        return box
    left, top = max(box[0], region[0]), max(box[1], region[1])
    right, bottom = min(box[2], region[2]), min(box[3], region[3])
    return (left, top, right, bottom) if right > left and bottom > top else box


def _paste_nearest(values, box, size, fill):
    """An integer map at the model's resolution, stretched (nearest) onto `box` of a `size` canvas."""
    left, top, right, bottom = box
    rows = (np.arange(bottom - top) * values.shape[0] // (bottom - top))
    columns = (np.arange(right - left) * values.shape[1] // (right - left))
    canvas = np.full((size[1], size[0]), fill, dtype=values.dtype)
    canvas[top:bottom, left:right] = values[rows][:, columns]
    return canvas


def _paste_bilinear(values, box, size):
    left, top, right, bottom = box
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None],
                            size=(bottom - top, right - left), mode="bilinear", align_corners=False)
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    canvas[top:bottom, left:right] = resized[0, 0].numpy().clip(0, 1)
    return canvas


def _dim_outside(display, box):
    """The image as floats, washed out where the model's crop does not reach."""
    rgb = np.asarray(display, dtype=np.float32).copy()
    left, top, right, bottom = box
    seen = np.zeros(rgb.shape[:2], dtype=bool)
    seen[top:bottom, left:right] = True
    rgb[~seen] = 0.4 * rgb[~seen] + 0.6 * 200
    return rgb


def _blend(rgb, colour, alpha):
    alpha = np.asarray(alpha, dtype=np.float32)[..., None]
    return (rgb * (1 - alpha) + colour * alpha).round().clip(0, 255).astype(np.uint8)


def _colormap(name, values):
    """H x W values in [0, 1] -> H x W x 3 floats in 0..255."""
    import matplotlib  # on first use: it is not needed to serve the page

    return matplotlib.colormaps[name](np.clip(values, 0, 1))[..., :3].astype(np.float32) * 255


def _min_max(values):
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _to_pil(view):
    return Image.fromarray((view * 255).round().clip(0, 255).astype(np.uint8))


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
