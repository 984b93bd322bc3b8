"""Fit a feature probe: a frozen DINOv2 read at its last blocks, one class per (source, label), fakes summed.

    python -m train.probe --data ../shared/data/faces140k ... --crop-faces --model dinov2-vits14 --pretrained \\
        --splits-from models/efficientnet-lite2 --layers 9 10 11 --output runs/dinov2-probe

Nothing in the ViT trains. Each image's CLS and mean patch token after each of `--layers` (the last block's
after the final norm; with `--pooling cls mean std` the patch tokens' standard deviation too) is its feature vector; a multinomial logistic regression over them (standardised, L2,
sources weighed by --balance-sources) learns one class per source and label ("faces140k/fake", "sd-people/real",
…), and P(fake) is the summed probability of the fake classes (modeling_deepfake_ensemble.FeatureProbe).

Why this design: on these features (bench/leave_one_source_out.py, same test split) one binary boundary gets
0.806 / AUC 0.888, one class per fake family 0.862 / 0.933, one class per source and label 0.878 / 0.949, close to
the 0.902 / 0.963 of a specialist per source that is told the source. Each source's fakes and reals form their
own clusters; a class each encloses them where one hyperplane cannot, and the sum keeps the verdict binary.

The blocks before the first of `--layers` are train.cached's cache (the same key: a probe over blocks 9-11 reuses
the activations `python -m train.cached --freeze-blocks 10` stored, and vice versa), so a rerun costs the last
blocks only: ~12 min for 16k faces on 2 CPU cores, the fit a minute or two. The features are kept beside the
activations, so refitting the head over the same rows (other --classes, --balance-sources, --inverse-l2) costs the
fit alone; a run over more sources (--data beyond its --splits-from run's) computes only the new images. The probe ships as a one-member
ensemble folder (the ensemble's modelling file holds FeatureProbe), so `pipeline(..., trust_remote_code=True)`
loads it, and `python -m train.stack --members` takes it like any trained folder. finish() (train/loop.py) does
the rest as for every run: temperature and thresholds on validation, test metrics, robustness, the Hub folder.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from tqdm.auto import tqdm

from deepfake_detector.images import ID2LABEL, LABEL2ID, DataError
from deepfake_detector.layout import write_json
from deepfake_detector.modeling_deepfake_ensemble import (
    DEFAULT_POOLING,
    DeepfakeEnsembleConfig,
    DeepfakeEnsembleForImageClassification,
    FeatureProbe,
    pooling_order,
)
from deepfake_detector.models import VIT_ARCHITECTURES, create_model, data_config_of
from train import evaluate as ev
from train.cached import CachedRunArguments, Split, cached_activations, cached_rows
from train.config import CONFIG_CLASSES, as_dict, command_line, output_paths, parse_args
from train.data import ImageDataset, source_weights
from train.loop import BEST, CHECKPOINT, RUN_CONFIG, check_output, cpu_state_dict, finish, load_splits, make_loader

CLASS_SCHEMES = ("source", "label")


@dataclass
class ProbeArguments(CachedRunArguments):
    layers: list[int] = field(default_factory=lambda: [9, 10, 11], metadata={
        "help": "Blocks (0-based) whose CLS and mean patch tokens make the features; the last block is read "
                "after the final norm"})
    pooling: list[str] = field(default_factory=lambda: list(DEFAULT_POOLING), metadata={
        "help": "What each read block gives: some of cls (the CLS token), mean (the patch tokens' mean), std (their "
                "standard deviation; helps on GAN faces at middle blocks)"})
    classes: str = field(default="source", metadata={
        "help": "The head's classes: 'source' (one per source and label, the fakes' probabilities summed) or "
                "'label' (plain fake/real)"})
    inverse_l2: float = field(default=0.05, metadata={
        "help": "Logistic regression's C (inverse L2 strength) on the standardised features"})


def main(argv=None):
    data_args, model_args, train_args, probe_args = parse_args(argv, classes=(*CONFIG_CLASSES, ProbeArguments),
                                                               prog="python -m train.probe")
    try:
        run(data_args, model_args, train_args, probe_args, command=command_line(argv, prog="python -m train.probe"))
    except DataError as e:
        print(f"train.probe: error: {e}", file=sys.stderr)
        return 2
    return 0


def class_names(rows, scheme):
    """Each row's class name and the class list with each class's label (0 fake, 1 real), sorted by name."""
    labels = np.asarray(rows["label"])
    if scheme == "label":
        names = np.array([ID2LABEL[int(y)] for y in labels])
    else:
        names = np.array([f"{source}/{ID2LABEL[int(y)]}" for source, y in zip(rows["source"], labels)])
    classes = sorted(set(names))
    class_labels = [LABEL2ID[c.rpartition("/")[2]] for c in classes]
    return names, classes, class_labels


@torch.no_grad()
def round_to_float16(model):
    """Round a model's weights to float16 and back, as a --save-dtype float16 folder holds them: features, fit and
    cache key are then those of the saved folder (train.stack and the benches reuse the cache)."""
    for tensor in model.state_dict().values():
        tensor.copy_(tensor.half().float())
    return model


def cached_features(probe, array, batch_size, name):
    """`probe.features` of every row of a cached activations memmap, kept beside it (features-<layers>.npy): a
    refit of the head (other classes, weights, C) then costs seconds, not a pass through the last blocks. Rows an
    earlier cache holds features of (same frozen model, same layers) are copied, as the activations are."""
    folder = os.path.dirname(array.filename)
    pooled = "" if probe.pooling == list(DEFAULT_POOLING) else "-" + "-".join(probe.pooling)
    file = f"features-{'-'.join(map(str, probe.layers))}{pooled}.npy"
    path = os.path.join(folder, file)
    if os.path.isfile(path):
        return np.load(path)
    start = time.time()
    found, keys = {}, []
    if os.path.isfile(os.path.join(folder, "rows.json")):
        with open(os.path.join(folder, "rows.json")) as f:
            saved = json.load(f)
        keys = saved["rows"]
        found = cached_rows(os.path.dirname(folder), saved["model"], exclude=os.path.basename(folder), having=file)
    copied = [i for i, key in enumerate(keys) if key in found]
    todo = sorted(set(range(len(array))) - set(copied))
    with torch.no_grad():
        computed = [probe.features(torch.from_numpy(np.array(array[todo[i:i + batch_size]])), probe.cache_start)
                    .numpy() for i in tqdm(range(0, len(todo), batch_size), desc=f"last blocks, {name}", leave=False)]
    others = {}  # each earlier cache's features opened once, when its first row is copied

    def features_of(other):
        if other not in others:
            others[other] = np.load(os.path.join(other, file), mmap_mode="r")
        return others[other]

    dim = computed[0].shape[1] if computed else features_of(found[keys[copied[0]]][0]).shape[1]
    features = np.empty((len(array), dim), dtype=np.float32)
    if todo:
        features[todo] = np.concatenate(computed)
    for i in copied:
        other, j = found[keys[i]]
        features[i] = features_of(other)[j]
    np.save(path, features)
    print(f"{name}: features of {len(todo)} images in {time.time() - start:.0f} s"
          f"{f' ({len(copied)} copied from earlier caches)' if copied else ''}")
    return features


def fit_head(head, x, names, classes, weights, inverse_l2):
    """Standardise, fit sklearn's multinomial logistic regression, fold the standardisation into `head`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=inverse_l2, max_iter=2000)
    regression.fit(scaler.transform(x), names, sample_weight=weights)
    if list(regression.classes_) != classes:
        raise RuntimeError(f"classes {list(regression.classes_)} != {classes}")
    coef, intercept = regression.coef_, regression.intercept_
    if len(classes) == 2:  # sklearn keeps one row for two classes: the second class's logit against the first
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight = coef / scaler.scale_
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(intercept - weight @ scaler.mean_, dtype=torch.float32))
    return regression.n_iter_


def probe_of(model, layers, class_labels=(0, 1), pooling=DEFAULT_POOLING):
    """A FeatureProbe over `model`'s weights reading `layers`, and the model split where the probe's blocks begin:
    the activation cache holds the output of the blocks before them."""
    probe = FeatureProbe(model.pretrained_cfg["architecture"], model.model_args, layers, list(class_labels),
                         pooling).eval()
    probe.backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    return probe, Split(model, probe.cache_start).eval()


def run(data_args, model_args, train_args, probe_args, command=""):
    if probe_args.classes not in CLASS_SCHEMES:
        raise DataError(f"--classes takes {' or '.join(CLASS_SCHEMES)}, not {probe_args.classes!r}.")
    try:  # checked before the data is loaded
        pooling_order(probe_args.pooling)
    except ValueError as e:
        raise DataError(f"--{e}.") from None
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    work, final = output_paths(train_args.output)
    run_config = {**as_dict(data_args, model_args, train_args, probe_args), "command": command}
    check_output(work, final, train_args, run_config)
    set_seed(train_args.seed)
    splits, scrub_report, counts = load_splits(data_args, train_args, accelerator)
    model = create_model(model_args.model, image_size=model_args.image_size, pretrained=model_args.pretrained)
    if train_args.save_dtype == "float16":
        round_to_float16(model)  # read the images with the weights that ship
    architecture = model.pretrained_cfg["architecture"]
    if architecture not in VIT_ARCHITECTURES:
        raise DataError(f"python -m train.probe reads a ViT ({', '.join(VIT_ARCHITECTURES)}): pass --model dinov2-vits14.")
    layers = sorted(set(probe_args.layers))
    if not layers or not 0 <= layers[0] <= layers[-1] < len(model.blocks):
        raise DataError(f"--layers takes block numbers from 0 to {len(model.blocks) - 1}.")
    config = data_config_of(model)
    names, classes, class_labels = class_names(splits["train"], probe_args.classes)
    probe, split_model = probe_of(model, layers, class_labels, probe_args.pooling)

    began = time.time()
    features = {}
    for name, rows in splits.items():
        array = cached_activations(split_model, rows, config, probe_args.cache_dir, name, train_args.batch_size,
                                   train_args.num_workers, data_args.reencode_jpeg)
        features[name] = cached_features(probe, array, train_args.batch_size, name)
    weights = (source_weights(list(splits["train"]["source"]), data_args.balance_sources).numpy()
               if data_args.balance_sources else None)
    fit_start = time.time()
    iterations = fit_head(probe.head, features["train"], names, classes, weights, probe_args.inverse_l2)
    print(f"head fitted over {len(classes)} classes on {len(names)} images in {time.time() - fit_start:.0f} s "
          f"({int(np.max(iterations))} L-BFGS iterations)")

    ensemble_config = DeepfakeEnsembleConfig(
        members=[{"name": f"{model_args.model}-probe", "source": f"{model_args.model} (pretrained, frozen)",
                  "architecture": architecture, "model_args": dict(model.model_args),
                  "data_config": {k: config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")},
                  "probe": {"layers": layers, "classes": classes, "class_labels": class_labels,
                            "pooling": probe.pooling}}],
        combine="logits", pretrained_cfg={k: config[k] for k in ("input_size", "interpolation", "crop_pct",
                                                                  "crop_mode", "mean", "std")},
        id2label=dict(ID2LABEL), label2id=dict(LABEL2ID),
    )
    detector = DeepfakeEnsembleForImageClassification(ensemble_config).eval()
    detector.members[0].load_state_dict(probe.state_dict())
    detector.model_name = f"{model_args.model}-probe"
    with torch.no_grad():
        logits = {name: detector.combiner(probe.collapse(probe.head(torch.from_numpy(features[name])))).numpy()
                  for name in ("train", "validation", "test")}
    labels = {name: np.asarray(rows["label"]) for name, rows in splits.items()}
    state = {"epoch": 1, "best_epoch": 1, "stale_epochs": 0, "train_seconds": time.time() - began,
             "train_images": len(names), "history": []}
    for name in ("train", "validation"):
        m = ev.classification_metrics(labels[name], ev.fake_probability_of(logits[name]))
        print(f"{name}: accuracy {m['accuracy']:.4f}, AUC {m['auc']:.4f}")
        state[f"{name}_metrics"] = m
    state["best_score"] = state["validation_metrics"]["auc"]
    state["history"].append({
        "epoch": 1, "lr": probe_args.inverse_l2, "seconds": state["train_seconds"],
        "train_loss": float(torch.nn.functional.cross_entropy(torch.as_tensor(logits["train"]),
                                                              torch.as_tensor(labels["train"]))),
        "val_loss": float(torch.nn.functional.cross_entropy(torch.as_tensor(logits["validation"]),
                                                            torch.as_tensor(labels["validation"]))),
        "val_accuracy": state["validation_metrics"]["accuracy"], "val_auc": state["validation_metrics"]["auc"]})
    for name in ("train_metrics", "validation_metrics"):
        del state[name]

    os.makedirs(os.path.join(work, CHECKPOINT))
    write_json(os.path.join(work, RUN_CONFIG), run_config)
    save_file(cpu_state_dict(detector), os.path.join(work, BEST))
    precomputed = {name: (logits[name], labels[name], np.arange(len(labels[name]))) for name in ("validation", "test")}
    datasets = {name: ImageDataset(rows, config, reencode_quality=data_args.reencode_jpeg) for name, rows in splits.items()}
    image_loaders = {name: make_loader(ds, train_args, shuffle=False) for name, ds in datasets.items()}
    return finish(detector, accelerator, datasets, image_loaders, splits, state, run_config, scrub_report, counts,
                  work, final, train_args, precomputed=precomputed,
                  describe={"model": detector.model_name, "probe": {"layers": layers, "pooling": probe.pooling,
                                                                    "classes": classes,
                                                                    "inverse_l2": probe_args.inverse_l2}})


if __name__ == "__main__":
    sys.exit(main())
