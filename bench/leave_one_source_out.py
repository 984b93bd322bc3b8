"""Leave-one-source-out: does a detector trained without a collection still catch it, and which sources help?

    python bench/leave_one_source_out.py --data ../shared/data/faces140k ... --output bench/out/loso

Fine-tuning the shipped pretrained CNN once per held-out source costs ~1 h each on 2 CPU cores, so this runs
the check on its cheap proxy: frozen ImageNet EfficientNet-Lite2 features (mean and std of every stage, where
../shared/notes/pretrained-weights.md found the real/fake signal) with a logistic-regression head, on the
same face crops and the same seeded splits as the training run (`python -m train --crop-faces --seed 0`).
Features are extracted once and cached in --output.

For each source S, and for each collection of real portraits inside `sd-people` (its file names say which):
  - in-domain: trained on every source's train split, scored on S's test split;
  - left out: trained on the train splits of every source but S, scored on S's test split;
  - alone: trained on S's train split only, scored on every other source's test split (does S generalise?).
"""

import argparse
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepfake_detector.models import MODELS, create_model, data_config
from train.data import ImageDataset, find_faces, load_sources, scrub, split

FAKE = 0


def collection(path, source):
    """sd-people's reals come from four collections, named in the file name (web, unsplash, fei, utk)."""
    if source != "sd-people":
        return source
    name = os.path.basename(path).lower()
    for prefix in ("unsplash", "fei", "utk", "web", "sd15", "sd14"):  # reals, then the two fake prompts
        if name.startswith(prefix):
            return f"sd-people/{prefix}"
    return "sd-people/other"


@torch.no_grad()
def stage_features(rows, image_size, batch_size=64):
    model = create_model("efficientnet-lite2", pretrained=True, image_size=image_size).eval()
    outputs = []
    hooks = [stage.register_forward_hook(lambda m, i, o: outputs.append(o)) for stage in model.blocks]
    dataset = ImageDataset(rows, data_config(MODELS["efficientnet-lite2"], image_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=1)
    features = []
    start = time.time()
    for i, (pixels, _, _) in enumerate(loader):
        outputs.clear()
        model.forward_features(pixels.contiguous(memory_format=torch.channels_last))
        features.append(torch.cat([torch.cat([o.mean((2, 3)), o.std((2, 3))], 1) for o in outputs], 1).numpy())
        if i % 20 == 0:
            print(f"features: {min((i + 1) * batch_size, len(dataset))}/{len(dataset)} images, "
                  f"{time.time() - start:.0f} s", flush=True)
    for hook in hooks:
        hook.remove()
    return np.concatenate(features)


def fit(x, y):
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    return head.fit(x, y)


def score(head, x, y):
    p_fake = head.predict_proba(x)[:, list(head.classes_).index(FAKE)]
    accuracy = float(((p_fake >= 0.5) == (y == FAKE)).mean())
    auc = float(roc_auc_score(y == FAKE, p_fake)) if len(set(y)) == 2 else None
    return accuracy, auc, float((p_fake >= 0.5).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--min-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--output", default="bench/out/loso")
    parser.add_argument("--train-per-source", type=int, default=800,
                        help="Train images per source (a seeded sample of its train split): the proxy needs no more")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    kept, _ = scrub(load_sources(args.data), min_size=args.min_size)
    kept, _ = find_faces(kept)
    splits = split(kept, seed=0)
    rng = np.random.default_rng(0)
    sources = np.asarray(splits["train"]["source"])
    sample = np.sort(np.concatenate([rng.permutation(np.flatnonzero(sources == s))[:args.train_per_source]
                                     for s in sorted(set(sources))]))
    splits["train"] = splits["train"].select(sample)
    cache = os.path.join(args.output, f"features-{args.image_size}.npz")
    names = {}
    if os.path.isfile(cache):
        loaded = np.load(cache)
        feats = {name: loaded[name] for name in ("train", "test")}
    else:
        feats = {name: stage_features(splits[name], args.image_size) for name in ("train", "test")}
        np.savez(cache, **feats)
    for name in ("train", "test"):
        rows = splits[name]
        names[name] = np.array([collection(img["path"], s) for img, s in zip(rows["image"], rows["source"])])
    y = {name: np.asarray(splits[name]["label"]) for name in ("train", "test")}
    src = {name: np.asarray(splits[name]["source"]) for name in ("train", "test")}

    everything = fit(feats["train"], y["train"])
    print(f"\n{'held-out source':>22} {'n':>5} | {'in-domain acc':>13} {'AUC':>6} | {'left out acc':>12} {'AUC':>6} "
          f"| {'alone: acc on the others':>24}")
    for source in sorted(set(src["test"])):
        test = src["test"] == source
        inside = score(everything, feats["test"][test], y["test"][test])
        out = fit(feats["train"][src["train"] != source], y["train"][src["train"] != source])
        left = score(out, feats["test"][test], y["test"][test])
        alone = fit(feats["train"][src["train"] == source], y["train"][src["train"] == source])
        others = score(alone, feats["test"][~test], y["test"][~test])
        print(f"{source:>22} {test.sum():>5} | {inside[0]:>13.3f} {inside[1]:>6.3f} | {left[0]:>12.3f} "
              f"{left[1] if left[1] is not None else float('nan'):>6.3f} | {others[0]:>17.3f} (AUC {others[1]:.3f})")

    # Real portraits of a collection never trained on: how many does the model call fake?
    print(f"\n{'real collection left out':>26} {'n':>5} | {'called fake (in-domain)':>23} | {'called fake (left out)':>22}")
    for name in sorted(set(names["test"][(src["test"] == "sd-people") & (y["test"] == 1)])):
        test = names["test"] == name
        keep = names["train"] != name
        out = fit(feats["train"][keep], y["train"][keep])
        print(f"{name:>26} {test.sum():>5} | {score(everything, feats['test'][test], y['test'][test])[2]:>23.3f} | "
              f"{score(out, feats['test'][test], y['test'][test])[2]:>22.3f}")


if __name__ == "__main__":
    main()
