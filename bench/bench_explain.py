"""How long each explanation takes on this machine's CPU: LIME (default and two other sample counts), Grad-CAM,
feature maps and the per-layer overlay, for the tuned CNN, the Xception and the ensemble.

    python bench/bench_explain.py                      # default-size untrained models, built in a temp folder
    python bench/bench_explain.py --models runs        # trained folders: runs/tuned-cnn, runs/xception, runs/ensemble

Without --models it uses models/ or runs/ when they hold all three trained folders, else builds models to the
shipped recipes (read from models/*/config.json) with random weights — speed does not depend on the weights. Prints p50 / p95 wall seconds and the process CPU seconds per call (CPU time
tells how much compute a call needs when other jobs share the cores and inflate the wall time).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from deepfake_detector import explain
from deepfake_detector.inference import load_pipeline
from deepfake_detector.layout import save_model
from deepfake_detector.models import create_like

NAMES = ("tuned-cnn", "xception", "ensemble")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="folder with tuned-cnn/, xception/ and ensemble/ model folders "
                                         "(default: models/ or runs/ if complete, else freshly built ones)")
    parser.add_argument("--model", nargs="+", choices=NAMES, default=list(NAMES), help="which models to time")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (after one warm-up)")
    parser.add_argument("--lime-samples", type=int, nargs="+",
                        default=[explain.LIME_SAMPLES, explain.LIME_SAMPLES // 2, explain.LIME_SAMPLES * 2],
                        help="LIME sample counts to time (the first is the default)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--image", help="an image to explain (default: a synthetic 256 x 192 one)")
    return parser.parse_args(argv)


def find_models(folder, scratch):
    """{name: folder}: the given folder, else a complete models/ or runs/, else default-size models built in
    `scratch`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [folder] if folder else [os.path.join(root, "models"), os.path.join(root, "runs")]
    for candidate in candidates:
        found = {name: os.path.join(candidate, name) for name in NAMES}
        if all(os.path.isfile(os.path.join(path, "config.json")) for path in found.values()):
            return found, f"trained models in {candidate}"
    if folder:
        sys.exit(f"--models {folder} must hold {', '.join(NAMES)} folders with a config.json each.")
    torch.manual_seed(0)
    shipped = os.path.join(root, "models")
    built = {name: save_model(create_like(os.path.join(shipped, name)).eval(), os.path.join(scratch, name))
             for name in NAMES}
    return built, "untrained models built to the shipped recipes (models/*/config.json)"


def synthetic_image(width=256, height=192, seed=0):
    """Smooth colour blobs plus fine noise: textured enough for superpixels and activations."""
    rng = np.random.RandomState(seed)
    coarse = Image.fromarray((rng.rand(6, 8, 3) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def timed(call, repeats, warm_up=True):
    """(wall seconds per call, CPU seconds per call) over `repeats` calls, after one untimed warm-up call (the
    first call on a model pays for oneDNN's kernel set-up)."""
    if warm_up:
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return np.array(wall), np.array(cpu)


def row(task, model, wall, cpu):
    print(f"{task:<24} {model:<10} {np.percentile(wall, 50):>7.2f} {np.percentile(wall, 95):>7.2f} "
          f"{np.median(cpu):>8.2f} {len(wall):>3}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = explain.as_rgb(args.image) if args.image else synthetic_image()
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as scratch:
        folders, what = find_models(args.models, scratch)
        print(f"{what}; image {image.size[0]}x{image.size[1]}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.1f} (other jobs share the cores: compare CPU s)")
        print(f"{'task':<24} {'model':<10} {'p50 s':>7} {'p95 s':>7} {'CPU s':>8} {'n':>3}")
        for name in args.model:
            classifier = load_pipeline(folders[name])
            for i, samples in enumerate(args.lime_samples):
                wall, cpu = timed(lambda: explain.lime_explanation(classifier, image, num_samples=samples),
                                  args.repeats, warm_up=i == 0)
                default = " (default)" if samples == explain.LIME_SAMPLES else ""
                row(f"lime {samples}{default}", name, wall, cpu)
            for member in [None] + (list(range(len(explain.members(classifier)))) if name == "ensemble" else []):
                wall, cpu = timed(lambda: explain.grad_cam(classifier, image, member=member), args.repeats)
                row("grad_cam" + ("" if member is None else f" member {member}"), name, wall, cpu)
            layers = list(explain.conv_stages(classifier))
            calls = iter(range(10 ** 9))
            wall, cpu = timed(lambda: explain.feature_maps(classifier, image, layers[next(calls) % len(layers)]),
                              args.repeats * len(layers))
            row("feature_maps (each layer)", name, wall, cpu)
            wall, cpu = timed(lambda: explain.layer_overlay(classifier, image), args.repeats)
            row("layer_overlay", name, wall, cpu)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
