"""Leave-one-source-out: does a detector trained without a collection still catch it, and which sources help?

    python bench/leave_one_source_out.py --data ../shared/data/faces140k ... --output bench/out/loso

    python bench/leave_one_source_out.py --backbone dinov2-vits14 --splits-from models/efficientnet-lite2 ...

Fine-tuning the shipped pretrained CNN once per held-out source costs ~1 h each on 2 CPU cores, so this runs
the check on its cheap proxy: frozen pretrained features with a logistic-regression head, on the same face
crops and the same seeded splits as the training run (`python -m train --crop-faces --seed 0`, or the rows of
a finished run with --splits-from). The backbones:
  - efficientnet-lite2: ImageNet EfficientNet-Lite2, mean and std of every stage (where
    ../shared/notes/pretrained-weights.md found the real/fake signal);
  - dinov2-vits14: DINOv2 ViT-S/14 as the shipped probe reads it: the CLS token and the mean patch token after
    blocks 9, 10 and 11 (+ the final norm), from the activation and feature caches train.probe filled for the
    same rows (computed here if missing).
Features are extracted once and cached in --output.

With --by-family (for a run over the larger pool), the unit left out is a generator family (every source's fakes
of it) or a real collection, and the head a fake/real logistic regression with sources weighed by count^-0.5:
  - fake family F: AUC of F's test fakes against every test real, and the share caught at 0.5, with F in training
    and without it;
  - real collection C: the share of C's test reals called real, with C in training and without it.

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

from deepfake_detector.models import MODELS, create_model, data_config, data_config_of
from train.data import ImageDataset, find_faces, groups_of, load_sources, resolve_guard, scrub, source_weights, split, splits_from_run

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


@torch.no_grad()
def dinov2_features(rows, name, layers=(9, 10, 11), pooling=("cls", "mean"), batch_size=64):
    """A DINOv2 probe's features as it ships (by default the whole-pool probe's: CLS and mean patch token after
    blocks 9, 10 and 11 + norm; weights rounded to float16): read from the activation and feature caches
    train.probe fills, computed where missing."""
    from train.cached import CACHE, cached_activations
    from train.probe import cached_features, probe_of, round_to_float16

    model = round_to_float16(create_model("dinov2-vits14", pretrained=True)).eval()
    probe, split_model = probe_of(model, list(layers), pooling=list(pooling))
    array = cached_activations(split_model, rows, data_config_of(model), CACHE, name, batch_size, 1)
    return cached_features(probe, array, batch_size, name)


def fit(x, y, weights=None):
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    return head.fit(x, y, logisticregression__sample_weight=weights)


def score(head, x, y):
    p_fake = head.predict_proba(x)[:, list(head.classes_).index(FAKE)]
    accuracy = float(((p_fake >= 0.5) == (y == FAKE)).mean())
    auc = float(roc_auc_score(y == FAKE, p_fake)) if len(set(y)) == 2 else None
    return accuracy, auc, float((p_fake >= 0.5).mean())


# The generator family of each shared set's fakes (train/sources.toml names the families of the larger pool).
FAMILY = {"faces140k": "StyleGAN", "faces140k-extra": "StyleGAN", "ciplab": "Photoshop", "stylegan2-thumbs": "StyleGAN2",
          "lfw-faceswap": "face swap", "sd-people": "diffusion"}


def balanced(sources):
    """Every source weighed alike (the training loop's --balance-sources 1)."""
    return source_weights(list(sources), 1.0).numpy()


def p_fake_of(head, x, is_fake):
    """P(fake) of a head over any classes: the summed probability of its fake classes."""
    probabilities = head.predict_proba(x)
    return probabilities[:, [is_fake(c) for c in head.classes_]].sum(1)


def family_designs(feats, full, test, sources):
    """Family-aware designs on the same frozen features, scored per source on test: which keeps the specialists'
    accuracy with the pool's breadth?"""
    x, y = feats["train_full"], np.asarray(full["train"]["label"])
    s = np.asarray(full["train"]["source"])
    x_test, y_test, s_test = feats["test"], np.asarray(test["label"]), np.asarray(test["source"])
    x_val, y_val, s_val = feats["validation"], np.asarray(full["validation"]["label"]), np.asarray(full["validation"]["source"])
    fake = lambda c: c == FAKE  # noqa: E731
    families = np.array([FAMILY.get(src, src) for src in s])
    designs = {}
    start = time.time()
    designs["pooled, natural sampling"] = p_fake_of(fit(x, y), x_test, fake)
    designs["pooled, source-balanced"] = p_fake_of(fit(x, y, balanced(s)), x_test, fake)
    by_family = np.where(y == FAKE, families, "real")
    designs["real + a class per fake family"] = p_fake_of(fit(x, by_family, balanced(s)), x_test,
                                                          lambda c: c != "real")
    by_source = np.array([f"{src}/{label}" for src, label in zip(s, y)])
    designs["a class per source and label"] = p_fake_of(fit(x, by_source, balanced(s)), x_test,
                                                        lambda c: c.endswith(f"/{FAKE}"))
    experts = {src: fit(x[s == src], y[s == src]) for src in sources}
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))  # noqa: E731
    expert_scores = lambda feats_: np.stack([logit(p_fake_of(experts[src], feats_, fake)) for src in sources], 1)  # noqa: E731
    combiner = fit(expert_scores(x_val), y_val, balanced(s_val))
    designs["experts per source + combiner (fit on validation)"] = p_fake_of(combiner, expert_scores(x_test), fake)
    specialist = np.zeros(len(y_test))
    for src in sources:  # the reference: each source scored by the expert trained on it alone
        specialist[s_test == src] = p_fake_of(experts[src], x_test[s_test == src], fake)
    designs["specialist (each source's own expert)"] = specialist
    print(f"\nfamily-aware designs on frozen features (fitted in {time.time() - start:.0f} s): test accuracy at 0.5 "
          f"(AUC) per source")
    print(f"{'design':>50} | " + " | ".join(f"{src[:16]:>16}" for src in sources) + f" | {'all':>13}")
    for name, p in designs.items():
        cells = []
        for src in sources:
            m = s_test == src
            cells.append(f"{((p[m] >= 0.5) == (y_test[m] == FAKE)).mean():.3f} ({roc_auc_score(y_test[m] == FAKE, p[m]):.3f})")
        overall = f"{((p >= 0.5) == (y_test == FAKE)).mean():.3f} ({roc_auc_score(y_test == FAKE, p):.3f})"
        print(f"{name:>50} | " + " | ".join(f"{c:>16}" for c in cells) + f" | {overall:>13}")


def fit_balanced(x, labels, sources, power=0.5):
    """A fake/real logistic regression, sources weighed by count^-power (a class per source and label, as the
    probe ships, costs ~60x the time per fit: too slow for one fit per family on 2 cores)."""
    return fit(x, labels, source_weights(list(sources), power).numpy())


def leave_one_family_out(feats, splits, min_test=20):
    """Each generator family and real collection left out of training in turn (groups with fewer than `min_test`
    test images are too small to measure and skipped)."""
    rows = {name: splits[name] for name in ("train", "test")}
    group = {name: np.array(groups_of([i["path"] for i in r["image"]], r["source"], r["label"]))
             for name, r in rows.items()}
    y = {name: np.asarray(r["label"]) for name, r in rows.items()}
    src = {name: np.asarray(r["source"]) for name, r in rows.items()}
    fake_probability = lambda head, x: p_fake_of(head, x, lambda c: c == FAKE)  # noqa: E731
    start = time.time()
    everything = fake_probability(fit_balanced(feats["train"], y["train"], src["train"]), feats["test"])
    print(f"\nleave one family out ({len(y['train'])} train rows, sources weighed by count^-0.5; one fit "
          f"{time.time() - start:.0f} s; groups under {min_test} test images skipped)")
    print(f"{'fake family left out':>28} {'n':>5} | {'in training: AUC':>16} {'caught':>7} | {'left out: AUC':>13} "
          f"{'caught':>7}")
    reals = y["test"] == 1
    results = {}
    for kind, label in (("fake", FAKE), ("real", 1)):
        if kind == "real":
            print(f"\n{'real collection left out':>28} {'n':>5} | {'in training: called real':>24} | "
                  f"{'left out: called real':>21}")
        for g in sorted(set(group["test"][y["test"] == label]), key=str.lower):
            test = (group["test"] == g) & (y["test"] == label)
            keep = ~((group["train"] == g) & (y["train"] == label))
            if keep.all() or test.sum() < min_test:
                continue  # nothing of it in training, or too few test images to measure
            left = fake_probability(fit_balanced(feats["train"][keep], y["train"][keep], src["train"][keep]),
                                    feats["test"])
            if kind == "fake":
                auc = [roc_auc_score(np.r_[np.ones(test.sum()), np.zeros(reals.sum())], np.r_[p[test], p[reals]])
                       for p in (everything, left)]
                caught = [float((p[test] >= 0.5).mean()) for p in (everything, left)]
                results[(kind, g)] = auc[1]
                print(f"{g[:28]:>28} {test.sum():>5} | {auc[0]:>16.3f} {caught[0]:>7.3f} | {auc[1]:>13.3f} "
                      f"{caught[1]:>7.3f}", flush=True)
            else:
                called = [float((p[test] < 0.5).mean()) for p in (everything, left)]
                results[(kind, g)] = called[1]
                print(f"{g[:28]:>28} {test.sum():>5} | {called[0]:>24.3f} | {called[1]:>21.3f}", flush=True)
    aucs = [v for (k, _), v in results.items() if k == "fake"]
    called = [v for (k, _), v in results.items() if k == "real"]
    print(f"\nleft out: lowest family AUC {min(aucs):.3f} ({sum(a >= 0.75 for a in aucs)} of {len(aucs)} at >= 0.75); "
          f"lowest collection called real {min(called):.3f} ({sum(c >= 0.9 for c in called)} of {len(called)} at >= 0.90); "
          f"{time.time() - start:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+")
    parser.add_argument("--min-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=160, help="efficientnet-lite2's input size")
    parser.add_argument("--backbone", choices=["efficientnet-lite2", "dinov2-vits14"], default="efficientnet-lite2")
    parser.add_argument("--splits-from", help="the rows and face boxes of a finished run (its splits.json) instead "
                                              "of scrubbing --data again")
    parser.add_argument("--output", default="bench/out/loso")
    parser.add_argument("--by-family", action="store_true",
                        help="Leave out each generator family and real collection instead of each source")
    parser.add_argument("--train-per-source", type=int, default=800,
                        help="Train images per source (a seeded sample of its train split): the proxy needs no more")
    parser.add_argument("--layers", type=int, nargs="+", default=[9, 10, 11],
                        help="dinov2-vits14: the blocks read (the middle-block probes read 3 5 7)")
    parser.add_argument("--pooling", nargs="+", default=["cls", "mean"],
                        help="dinov2-vits14: what each block gives (cls, mean, std)")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    full = None  # a finished run's whole splits, kept for the DINOv2 cache and the family-aware designs
    if args.splits_from:
        full = splits_from_run(args.splits_from, guard=resolve_guard("auto"))[0]
        splits = dict(full)
    elif args.data:
        kept, _ = scrub(load_sources(args.data), min_size=args.min_size, guard=resolve_guard("auto"))
        kept, _ = find_faces(kept)
        splits = split(kept, seed=0)
    else:
        parser.error("pass --data folders or --splits-from a finished run")
    rng = np.random.default_rng(0)
    sources = np.asarray(splits["train"]["source"])
    sample = np.sort(np.concatenate([rng.permutation(np.flatnonzero(sources == s))[:args.train_per_source]
                                     for s in sorted(set(sources))]))
    splits["train"] = splits["train"].select(sample)
    dinov2 = args.backbone == "dinov2-vits14"
    # The family-aware designs (not --by-family) read a finished run's whole train split and validation too.
    whole_split = dinov2 and args.splits_from and not args.by_family
    tag = args.backbone if dinov2 else f"{args.image_size}"
    if dinov2 and (args.layers, args.pooling) != ([9, 10, 11], ["cls", "mean"]):
        tag += f"-{'-'.join(map(str, args.layers))}-{'-'.join(args.pooling)}"
    if dinov2 and args.splits_from and args.by_family:
        tag += "-sample"  # only the sampled train rows and test, not the whole split a run's other cache holds
    cache = os.path.join(args.output, f"features-{tag}{'-' + os.path.basename(args.splits_from) if args.splits_from else ''}.npz")
    names = {}
    if os.path.isfile(cache):
        loaded = np.load(cache)
        feats = {name: loaded[name] for name in loaded.files}
        if "train_full" in feats:  # the sample may differ from the run that saved them (--train-per-source)
            feats["train"] = feats["train_full"][sample]
    else:
        read = dict(layers=args.layers, pooling=args.pooling)
        if whole_split:
            # The cache holds the whole train split (train.cached's); the sample is a selection of it. The whole
            # split and validation are kept for the family-aware designs below.
            feats = {"train_full": dinov2_features(full["train"], "train", **read),
                     "validation": dinov2_features(full["validation"], "validation", **read),
                     "test": dinov2_features(splits["test"], "test", **read)}
            feats["train"] = feats["train_full"][sample]
        elif dinov2:
            feats = {name: dinov2_features(splits[name], name, **read) for name in ("train", "test")}
        else:
            feats = {name: stage_features(splits[name], args.image_size) for name in ("train", "test")}
        np.savez(cache, **feats)
    for name in ("train", "test"):
        rows = splits[name]
        names[name] = np.array([collection(img["path"], s) for img, s in zip(rows["image"], rows["source"])])
    y = {name: np.asarray(splits[name]["label"]) for name in ("train", "test")}
    src = {name: np.asarray(splits[name]["source"]) for name in ("train", "test")}

    if args.by_family:
        return leave_one_family_out(feats, splits)
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

    if "train_full" in feats:
        family_designs(feats, full, splits["test"], sorted(set(src["test"])))


if __name__ == "__main__":
    main()
