"""Which DINOv2 blocks, pooled how, separate one group of sources' fakes from its reals: a logistic regression per
block set and pooling, fitted on the group's train rows, C chosen on validation, scored on test.

    python bench/probe_layers.py --splits-from runs/dinov2-vits14-probe-pool-all \\
        --group faces140k=faces140k,faces140k-extra,faces140k-demo --group ciplab=ciplab,ciplab-copy

Every row of the groups runs once through the frozen ViT (float16-rounded, as the probes ship; the image and its
mirror image averaged), keeping each block's CLS token, patch-token mean and patch-token standard deviation
(bench/out/probe-layers-<key>.npz, so a rerun costs the fits alone). This is how `--layers 3 5 7 --pooling cls mean
std` was chosen for the middle-block probe (README, "The models"): on the faces140k group's 368 test faces, blocks
9-11 (the whole-pool probe's) give 0.818 / AUC 0.900 and blocks 3, 5, 7 with the spread 0.886 / AUC 0.951
(bench/out/probe-layers.txt).
"""

import argparse
import hashlib
import json
import os

import numpy as np
import torch

from deepfake_detector.modeling_deepfake_ensemble import DEFAULT_POOLING, POOLINGS
from deepfake_detector.models import create_model, data_config_of
from train.data import ImageDataset, splits_from_run
from train.probe import probe_of, round_to_float16

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK_SETS = ([11], [9, 10, 11], [2], [4], [6], [8], [3, 5, 7], [4, 6, 8], [5, 7, 9, 11], list(range(12)))


@torch.no_grad()
def block_features(rows, batch_size):
    """[rows, blocks, 3, dim]: per block the CLS token, patch mean and patch std, averaged over the mirror image."""
    model = round_to_float16(create_model("dinov2-vits14", image_size=224, pretrained=True)).eval()
    blocks = list(range(len(model.blocks)))
    probe, _ = probe_of(model, blocks, pooling=POOLINGS)  # the shipped probes' own pooling, every block read
    loader = torch.utils.data.DataLoader(ImageDataset(rows, data_config_of(model)), batch_size=batch_size)
    out = []
    for pixels, _, _ in loader:
        features = (probe.features(pixels) + probe.features(pixels.flip(-1))) / 2
        out.append(features.view(len(pixels), len(blocks), len(POOLINGS), -1).half().numpy())
    return np.concatenate(out)


def load(splits_from, sources, batch_size):
    key = hashlib.sha1(json.dumps([splits_from, sorted(sources)]).encode()).hexdigest()[:12]
    path = os.path.join(ROOT, "bench", "out", f"probe-layers-{key}.npz")
    if os.path.isfile(path):
        saved = np.load(path)
        return {name: (saved[f"{name}_x"], saved[f"{name}_y"], saved[f"{name}_source"])
                for name in ("train", "validation", "test")}
    splits, _, _ = splits_from_run(splits_from)
    data, arrays = {}, {}
    for name in ("train", "validation", "test"):
        rows = splits[name].select([i for i, s in enumerate(splits[name]["source"]) if s in sources])
        data[name] = (block_features(rows, batch_size), np.asarray(rows["label"]), np.asarray(rows["source"]))
        arrays.update({f"{name}_x": data[name][0], f"{name}_y": data[name][1], f"{name}_source": data[name][2]})
        print(f"{name}: {len(rows)} rows")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)
    return data


def fit(data, blocks, pooling):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    parts = [POOLINGS.index(p) for p in pooling]

    def x(name):
        return data[name][0][:, blocks][:, :, parts].reshape(len(data[name][0]), -1).astype(np.float32)

    scaler = StandardScaler().fit(x("train"))
    fits = [(LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x("train")), data["train"][1]), c)
            for c in (0.01, 0.05, 0.2)]
    regression, c = max(fits, key=lambda f: f[0].score(scaler.transform(x("validation")), data["validation"][1]))
    p = regression.predict_proba(scaler.transform(x("test")))[:, 1]
    y = data["test"][1]
    return c, float(((p > 0.5) == y).mean()), float(roc_auc_score(y, p))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits-from", required=True, help="A finished run whose splits.json gives the rows")
    parser.add_argument("--group", action="append", required=True,
                        help="NAME=SOURCE,SOURCE…: the sources one regression is fitted and scored on")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    groups = dict(g.split("=", 1) for g in args.group)
    groups = {name: set(sources.split(",")) for name, sources in groups.items()}
    data = load(args.splits_from, set().union(*groups.values()), args.batch_size)
    for name, sources in groups.items():
        mine = {split: tuple(a[np.isin(d[2], list(sources))] for a in d) for split, d in data.items()}
        print(f"\n{name}: {len(mine['train'][1])} train, {len(mine['test'][1])} test rows")
        for blocks in BLOCK_SETS:
            for pooling in (DEFAULT_POOLING, POOLINGS):
                c, accuracy, auc = fit(mine, blocks, pooling)
                print(f"  blocks {','.join(map(str, blocks)):<24} {'+'.join(pooling):<13} C={c:<5} "
                      f"test accuracy {accuracy:.3f}  AUC {auc:.3f}")


if __name__ == "__main__":
    main()
