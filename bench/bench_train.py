"""Training throughput and peak memory per model, and data-loading throughput on its own.

    python bench/bench_train.py                              # CPU, the shipped recipes (models/*/config.json)
    python bench/bench_train.py --device cuda --mixed-precision bf16 --image-size 299 --width 1

Each model is measured in its own subprocess so its peak memory is its own. The model part uses random
tensors (pure compute: forward + backward + AdamW step); the data part decodes, augments and batches real
images from --data with the training dataset class, so a slow input pipeline shows up separately.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def measure_model(name, image_size, width, batch_size, steps, device, mixed_precision):
    import torch

    from deepfake_detector.layout import save_model
    from deepfake_detector.models import create_like, create_model, data_config_of, logits_of
    from train.loop import set_train_mode
    from train.models import trainable_parameters

    if image_size is None and width is None:  # the shipped recipe, read from the model's own config.json
        model = create_like(os.path.join(SHIPPED, name))
        image_size = data_config_of(model)["input_size"][-1]
    elif name == "ensemble":
        root = tempfile.mkdtemp()
        members = [save_model(create_model(m, image_size=image_size, width=width if m == "xception" else 1.0),
                              os.path.join(root, m)) for m in ("tuned-cnn", "xception")]
        model = create_model("ensemble", members=members)
    else:
        model = create_model(name, image_size=image_size, width=width if name == "xception" else 1.0)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    set_train_mode(model, False)
    timings = []
    for step in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(logits_of(model(x)), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up steps excluded
            timings.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": name, "image_size": image_size, "train_images_per_s": batch_size * len(timings) / sum(timings),
            "peak_memory_mb": peak / 2**20, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "device": device, "threads": torch.get_num_threads()}


def measure_data(data, image_size, batch_size, workers, batches):
    import torch

    from deepfake_detector.models import MODELS, create_like, data_config, data_config_of
    from train.data import Augment, ImageDataset, load_sources, scrub

    rows, _ = scrub(load_sources(data))
    config = (data_config_of(create_like(os.path.join(SHIPPED, "xception"))) if image_size is None
              else data_config(MODELS["xception"], image_size))
    dataset = ImageDataset(rows.shuffle(seed=0), config, augment=Augment())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(iterator)[0])
    return {"workers": workers, "images_per_s": count / (time.perf_counter() - start)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tuned-cnn", "xception", "ensemble"])
    parser.add_argument("--image-size", type=int, help="Input size (default: each shipped model's own)")
    parser.add_argument("--width", type=float, help="Xception width multiplier (default: the shipped model's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--data", nargs="+", default=["../shared/data/faces140k"])
    parser.add_argument("--data-batches", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model in this process
    args = parser.parse_args()

    if args.one:
        print(json.dumps(measure_model(args.one, args.image_size, args.width, args.batch_size, args.steps,
                                       args.device, args.mixed_precision)))
        return
    print(f"{'model':>10} {'size':>5} {'params (M)':>10} {'train img/s':>12} {'peak MB':>9}  device")
    for name in args.models:
        recipe = [] if args.image_size is None and args.width is None else [
            "--image-size", str(args.image_size or 128), "--width", str(args.width or 1.0)]
        command = [sys.executable, __file__, "--one", name, *recipe, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--device", args.device, "--mixed-precision", args.mixed_precision]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['model']:>10} {r['image_size']:>5} {r['parameters_m']:>10.2f} {r['train_images_per_s']:>12.1f} "
              f"{r['peak_memory_mb']:>9.0f}  {r['device']} ({r['threads']} threads)")
    if os.path.isdir(args.data[0]):
        for workers in (0, 2):
            r = measure_data(args.data, args.image_size, args.batch_size, workers, args.data_batches)
            print(f"data loading (decode + augment + batch, {workers} workers): {r['images_per_s']:.0f} img/s")
    else:
        print(f"data loading: skipped ({args.data[0]} not found)")


if __name__ == "__main__":
    main()
