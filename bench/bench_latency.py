"""Batch-1 CPU latency of every shipped model through `pipeline()`, the way the app scores one face.

    python bench/bench_latency.py                          # the models of models/models.json
    python bench/bench_latency.py models/efficientnet-lite2 runs/dinov2-vits14 --repeats 50

For each model: load time, then p50 / p95 wall milliseconds of `pipeline(face_crop)` over --repeats calls after
two warm-up calls, on one face crop of examples/real-ffhq.jpg, with the torch threads this machine has; and the
process CPU milliseconds per call (which tells the compute a call needs even when other jobs share the cores).
Run it on a quiet machine and say which one the figures come from.
"""

import argparse
import json
import os
import statistics
import time

import torch
from PIL import Image

from deepfake_detector.faces import crop_face, detect_faces
from deepfake_detector.inference import load_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped():
    with open(os.path.join(ROOT, "models", "models.json")) as f:
        return [os.path.join(ROOT, entry["local"]) for entry in json.load(f)["models"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model folders (default: the shipped ones)")
    parser.add_argument("--image", default=os.path.join(ROOT, "examples", "real-ffhq.jpg"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    image = Image.open(args.image).convert("RGB")
    faces = detect_faces(image)
    face = crop_face(image, faces[0].box) if faces else image
    print(f"batch 1 through pipeline(), {torch.get_num_threads()} torch threads, {args.repeats} calls after 2 warm-up")
    print(f"{'model':>28} {'load s':>7} {'p50 ms':>7} {'p95 ms':>7} {'CPU ms':>7}")
    for folder in args.models or shipped():
        start = time.perf_counter()
        classifier = load_pipeline(folder)
        load_s = time.perf_counter() - start
        for _ in range(2):
            classifier(face)
        wall, cpu = [], time.process_time()
        for _ in range(args.repeats):
            start = time.perf_counter()
            classifier(face)
            wall.append((time.perf_counter() - start) * 1000)
        cpu_ms = (time.process_time() - cpu) * 1000 / args.repeats
        p95 = sorted(wall)[max(0, round(0.95 * len(wall)) - 1)]
        print(f"{os.path.relpath(folder, ROOT):>28} {load_s:>7.1f} {statistics.median(wall):>7.0f} {p95:>7.0f} {cpu_ms:>7.0f}")


if __name__ == "__main__":
    main()
