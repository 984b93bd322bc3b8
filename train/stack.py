"""Stack trained detectors into the ensemble by fitting its combiner on held-out predictions: no image is trained on.

    python -m train.stack --data ../shared/data/faces140k ... --model ensemble \\
        --members models/efficientnet-lite2 runs/dinov2-vits14 --flip-tta --splits-from models/efficientnet-lite2 \\
        --output runs/ensemble

The ensemble's logits combiner is a linear layer over its members' logits (modeling_deepfake_ensemble.py):
a handful of numbers. `python -m train --model ensemble` fits it by a training epoch over every train image, which
runs every member on every image (~40 min on 2 CPU cores for two CNNs, far more with a ViT member), and on
images the members were trained on, whose logits are over-confident. Here the members score the validation and
test splits of their own run once (`--splits-from`, the rows and face boxes they were trained and tested with),
through the ensemble itself (its resizing, its flips), and

  1. the combiner is fitted (logistic regression, L-BFGS) on a seeded, label-stratified `--fit-fraction` of the
     validation split, which the members never trained on;
  2. the rest of validation is the ensemble's validation split: finish() (train/loop.py) fits the temperature and
     the verdict thresholds there, then scores test, robustness and writes the Hub folder, as for every run.

So the test split is never seen, and neither half of validation is used twice. With `--folds K` the combiner learns
from all of validation instead (cross-fitting, as scikit-learn's stacking does): K combiners, each fitted on K-1
folds, score the fold left out; finish() calibrates on those out-of-fold scores, and the combiner shipped is fitted
on every validation row. A member that matters on a few sources (a specialist, gated) then has its weight set by
twice the rows: ciplab has ~120 validation faces, half of them under the default split.
"""

import copy
import hashlib
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

from deepfake_detector.images import DataError
from deepfake_detector.layout import write_json
from deepfake_detector.modeling_deepfake_ensemble import FeatureProbe
from deepfake_detector.models import ENSEMBLE, create_model, data_config_of
from train import evaluate as ev
from train.cached import CACHE, Split, cached_activations, map_cached
from train.config import CONFIG_CLASSES, as_dict, command_line, output_paths, parse_args
from train.data import ImageDataset, resolve_guard, splits_from_run
from train.loop import BEST, CHECKPOINT, RUN_CONFIG, check_output, cpu_state_dict, finish, make_loader


@dataclass
class StackArguments:
    fit_fraction: float = field(default=0.5, metadata={
        "help": "Share of the validation split the combiner is fitted on; the rest calibrates and sets thresholds"})
    folds: int = field(default=0, metadata={
        "help": "Cross-fit the combiner over all of validation instead of --fit-fraction of it: K combiners fitted "
                "on K-1 folds score the fold left out, the temperature and thresholds are set on those scores, and "
                "the combiner shipped is fitted on every row (0 = off)"})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty on the combiner's weights"})
    gate: bool = field(default=False, metadata={
        "help": "Gate every trained member by the feature probe among --members: the combiner also reads all "
                "members' logits times g, the probe's probability that the image comes from that member's own "
                "training sources, and g: one combination where the member knows the data, another elsewhere"})
    route_members: list[str] = field(default_factory=list, metadata={
        "help": "With --gate, the members from these runs read a learned router instead of the probe's summed "
                "classes: a logistic regression on the class probabilities of every probe with a class per source, "
                "fitted on validation to tell the sources a member trained on from the rest (out of fold where the "
                "combiner learns from it)"})
    router_l2: float = field(default=1e-2, metadata={"help": "L2 penalty on the routers' weights"})
    expert_members: list[str] = field(default_factory=list, metadata={
        "help": "With --gate and --folds, an expert over the members from these runs: the images the first one's "
                "gate sends it (g > --expert-threshold) are scored by a combiner of their logits alone, fitted on "
                "the validation images the gate sends there (out-of-fold g)"})
    expert_threshold: float = field(default=0.5, metadata={
        "help": "The g above which the expert takes an image (0.5: where a router's belief that the image comes "
                "from its member's sources passes one half)"})
    cache_dir: str = field(default=CACHE, metadata={
        "help": "train.cached's activation cache, where a feature probe member's activations are read and the "
                "members' scores on validation and test are kept"})


def main(argv=None):
    data_args, model_args, train_args, stack_args = parse_args(argv, classes=(*CONFIG_CLASSES, StackArguments),
                                                               prog="python -m train.stack")
    try:
        run(data_args, model_args, train_args, stack_args,
            command=command_line(argv, prog="python -m train.stack"))
    except DataError as e:
        print(f"train.stack: error: {e}", file=sys.stderr)
        return 2
    return 0


def fit_split(labels, sources, fraction, seed):
    """Indices of a `fraction` of the rows, the same share of every (source, label) group; and the rest."""
    rng = np.random.default_rng(seed)
    fit = []
    for group in sorted(set(zip(sources, labels))):
        rows = np.flatnonzero((sources == group[0]) & (labels == group[1]))
        fit.extend(rng.permutation(rows)[:round(len(rows) * fraction)])
    fit = np.sort(np.asarray(fit, dtype=int))
    return fit, np.setdiff1d(np.arange(len(labels)), fit)


@torch.no_grad()
def member_logits(ensemble, rows, train_args, name, cache_dir=CACHE, reencode=None):
    """What the ensemble's combiner reads, before the gates: {"logits": [views, rows, members * labels], every
    member's logits as the ensemble computes them, "probs": {probe: [views, rows, classes]}, the class probabilities
    of the probes that gates and routers read}, one view, or with flip_tta two (the images, then their mirror
    images); and the labels. `combiner_input_of` turns them into the combiner's inputs.

    A feature probe that sees the ensemble's own input unchanged (it is the first of the largest members, so its
    size, resizing and normalisation are the ensemble's) is read from train.cached's activation cache, keyed by
    the rows and its frozen weights: the cache train.probe filled, so its ViT is not run again; probes on one
    shared backbone that start from the same cached block run its later blocks once for all of them. Every other
    member runs on the images."""
    config = data_config_of(ensemble)
    logits, probs, on_images = [None] * len(ensemble.members), {}, []
    gating = ensemble.gating_probes()
    cached = {}  # (backbone owner, first block run) -> the probes read from that cache, in one pass over it
    for i, (member, spec) in enumerate(zip(ensemble.members, ensemble.config.members)):
        if isinstance(member, FeatureProbe) and not ensemble.config.flip_tta and _sees_input(spec, config):
            cached.setdefault((ensemble.backbone_owner(i), member.cache_start), []).append(i)
        else:
            on_images.append(i)
    for (owner, start), readers in cached.items():
        backbone = ensemble.members[owner].backbone
        array = cached_activations(Split(backbone, start).eval(), rows, config, cache_dir, name,
                                   train_args.batch_size, train_args.num_workers, reencode)
        layers = sorted({layer for i in readers for layer in ensemble.members[i].layers})

        def class_logits(tokens, readers=readers, layers=layers, start=start):
            blocks = ensemble.members[readers[0]].block_tokens(tokens, layers, start)
            return torch.cat([ensemble.members[i].class_logits(None, tokens=blocks) for i in readers], 1)

        names = " + ".join(ensemble.config.members[i]["name"] for i in readers)
        columns = torch.from_numpy(map_cached(class_logits, array, train_args.batch_size, f"{names} on {name}"))
        for i, part in zip(readers, columns.split([len(ensemble.members[i].class_labels) for i in readers], 1)):
            logits[i] = ensemble.members[i].collapse(part)[None]
            if i in gating:
                probs[i] = part.softmax(1)[None]
    labels = torch.as_tensor(np.asarray(rows["label"]))
    if on_images:
        views = 2 if ensemble.config.flip_tta else 1
        parts = {i: [] for i in on_images}
        loader = make_loader(ImageDataset(rows, config, reencode_quality=reencode), train_args, shuffle=False)
        for pixels, _, _ in tqdm(loader, desc=f"members on {name}", leave=False):
            outputs = {i: [] for i in on_images}
            for view in [pixels, pixels.flip(-1)][:views]:
                for i, x in enumerate(ensemble.member_inputs(view)):
                    if i in on_images:
                        outputs[i].append(ensemble.member_output(i, x))
            for i, out in outputs.items():
                parts[i].append(out)
        for i, batches in parts.items():
            logits[i] = torch.cat([torch.stack([view[0] for view in batch]) for batch in batches], 1)
            if i in gating:
                probs[i] = torch.cat([torch.stack([view[1] for view in batch]) for batch in batches], 1)
    return {"logits": torch.cat(logits, 2), "probs": probs}, labels


def combiner_input_of(ensemble, scores, rows=slice(None)):
    """[rows, combiner inputs] from `member_logits`' scores: the ensemble's combiner_input per view (its gates and
    routers as they are now), averaged over the views (exact with flip_tta, as the combiner is linear in them)."""
    k = ensemble.config.num_labels
    return torch.stack([ensemble.combiner_input(list(view[rows].split(k, 1)),
                                                {i: p[v][rows] for i, p in scores["probs"].items()})
                        for v, view in enumerate(scores["logits"])]).mean(0)


def member_scores(ensemble, rows, train_args, name, cache_dir=CACHE, reencode=None):
    """member_logits(), kept in `cache_dir` under a digest of the members' weights, the ensemble's layout and the
    rows: stacking the same members again (another --folds, --l2, or bench/stack_fitting.py) costs seconds."""
    digest = hashlib.sha1(json.dumps(["scores", ensemble.config.members, ensemble.config.gates,
                                      ensemble.config.routers, ensemble.config.flip_tta, reencode, name,
                                      rows.remove_columns([c for c in rows.column_names if c == "image"]).to_dict()],
                                     sort_keys=True, default=str).encode())
    for key, value in ensemble.state_dict().items():
        if not key.startswith(("combiner.", "routers.", "experts.")):
            digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    path = os.path.join(cache_dir, "combiner-inputs", f"{digest.hexdigest()[:20]}.pt")
    if os.path.isfile(path):
        saved = torch.load(path)
        return saved["scores"], saved["labels"]
    scores, labels = member_logits(ensemble, rows, train_args, name, cache_dir, reencode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"scores": scores, "labels": labels}, path + ".tmp")
    os.replace(path + ".tmp", path)  # never a half-written file under the name a later run reads
    return scores, labels


def fit_routers(ensemble, scores, sources, l2, rows):
    """Fit every router on the validation `rows`: a logistic regression of "this image comes from the router's
    sources" on its features (every view), from zero."""
    views = len(scores["logits"])
    for r, (router, spec) in enumerate(zip(ensemble.routers, ensemble.config.routers)):
        z = torch.cat([ensemble.router_features(r, {i: p[v][rows] for i, p in scores["probs"].items()})
                       for v in range(views)])
        target = torch.as_tensor(np.tile(np.isin(sources[rows], spec["sources"]), views), dtype=torch.float32)
        with torch.no_grad():
            router.weight.zero_()
            router.bias.zero_()
        fit_combiner(router, z, target, l2, loss=router_loss)


def router_folds(labels, sources, folds, seed):
    """The folds routers are fitted out of: the combiner's with --folds, else 10."""
    return fold_split(labels, sources, folds or 10, seed)


def routed_inputs(ensemble, scores, sources, fold, l2):
    """The combiner's inputs on validation with every router's g out of fold (routers fitted on the other folds
    score the fold left out, so the combiner learns how far to trust g where the router has not seen the image);
    the routers are then fitted on every row, as they ship."""
    if not ensemble.config.routers:
        return combiner_input_of(ensemble, scores)
    inputs = torch.empty(scores["logits"].shape[1], ensemble.combiner.in_features)
    for k in np.unique(fold):
        held = np.flatnonzero(fold == k)
        fit_routers(ensemble, scores, sources, l2, np.flatnonzero(fold != k))
        with torch.no_grad():
            inputs[held] = combiner_input_of(ensemble, scores, held)
    fit_routers(ensemble, scores, sources, l2, np.arange(len(sources)))
    return inputs


def expert_view(ensemble, x, e):
    """(g of expert e's gate, its members' logits) on the rows of `x`, combiner inputs (combiner_input's layout)."""
    n, k = len(ensemble.members), ensemble.config.num_labels
    spec = ensemble.config.experts[e]
    g = x[:, gate_start(n, k, spec["gate"]) + n * k]
    return g, x[:, [i * k + c for i in spec["members"] for c in range(k)]]


def apply_experts(ensemble, x, logits):
    """The combiner's `logits` on the rows of `x`, with the rows each expert's gate sends it scored by the expert
    (forward()'s expert_logits, from combiner inputs)."""
    logits = torch.as_tensor(logits).clone()
    with torch.no_grad():
        for e, (expert, spec) in enumerate(zip(ensemble.experts, ensemble.config.experts)):
            g, z = expert_view(ensemble, x, e)
            taken = g > spec["threshold"]
            logits[taken] = expert(z[taken])
    return logits


def fit_experts(ensemble, x, y, fold, l2, logits):
    """Fit each expert on the validation rows its gate sends it (out-of-fold g above its threshold) and return the
    validation logits, out of fold, with the experts: each expert cross-fitted on the same folds as the combiner
    scores the rows it takes, the combiner's `logits` the rest."""
    logits_before = torch.as_tensor(logits)
    logits = logits_before.clone()
    for e, (expert, spec) in enumerate(zip(ensemble.experts, ensemble.config.experts)):
        g, z = expert_view(ensemble, x, e)
        taken = g > spec["threshold"]
        if len(set(y[taken].tolist())) < 2 or len(np.unique(fold[taken.numpy()])) < 2:
            raise DataError(f"{int(taken.sum())} validation images pass the expert's gate (g > {spec['threshold']}), "
                            "too few to fit it out of fold: lower --expert-threshold or drop --expert-members.")
        logits[taken] = cross_fit(expert, z[taken], y[taken], fold[taken.numpy()], l2)
        fit_combiner(expert, z[taken], y[taken], l2)
        print(f"expert over {', '.join(ensemble.config.members[i]['source'] for i in spec['members'])}: g > "
              f"{spec['threshold']} sends it {int(taken.sum())} validation images; log loss out of fold "
              f"{float(torch.nn.functional.cross_entropy(logits, y)):.4f} (the combiner alone "
              f"{float(torch.nn.functional.cross_entropy(logits_before, y)):.4f})")
    return logits


def fold_split(labels, sources, folds, seed):
    """A fold number per row: every (source, label) group dealt out over the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for group in sorted(set(zip(sources, labels))):
        rows = rng.permutation(np.flatnonzero((sources == group[0]) & (labels == group[1])))
        fold[rows] = (np.arange(len(rows)) + rng.integers(folds)) % folds  # small groups: not always fold 0
    return fold


def fit_plan(labels, sources, folds, fit_fraction, seed):
    """(rows the combiner is fitted on, rows that calibrate it, fold numbers or None): with `folds` every row does
    both (calibrated out of fold), else `fit_fraction` of every (source, label) group fits and the rest calibrates."""
    if folds:
        every = np.arange(len(labels))
        return every, every, fold_split(labels, sources, folds, seed)
    return (*fit_split(labels, sources, fit_fraction, seed), None)


def fit_with_calibration(combiner, x, y, fit, calibrate, fold, l2):
    """Fit `combiner` on the rows `fit` and return (the logits it is calibrated with on the rows `calibrate`, the
    fit's loss): out of fold where `fold` numbers folds, else the fitted combiner's own on the held-out rows."""
    out_of_fold = None if fold is None else cross_fit(combiner, x, y, fold, l2).numpy()
    loss = fit_combiner(combiner, x[fit], y[fit], l2)
    if out_of_fold is not None:
        return out_of_fold, loss
    with torch.no_grad():
        return combiner(x[calibrate]).numpy(), loss


def cross_fit(combiner, x, y, fold, l2):
    """Out-of-fold logits of `combiner` fitted on the other folds, one fold at a time, each from its init."""
    logits = torch.empty(len(y), combiner.out_features)
    for k in np.unique(fold):
        held = torch.as_tensor(fold == k)
        part = copy.deepcopy(combiner)
        fit_combiner(part, x[~held], y[~held], l2)
        with torch.no_grad():
            logits[held] = part(x[held])
    return logits


def _sees_input(spec, config):
    return all(spec["data_config"][k] == config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct"))


def fit_combiner(combiner, x, y, l2, loss=torch.nn.functional.cross_entropy):
    """Multinomial logistic regression on the members' logits, from the combiner's init (the plain average), by
    L-BFGS with an L2 penalty on the weights; returns the fitted `loss`. Routers are fitted the same way, with the
    binary loss of their one logit (`fit_routers`)."""
    optimizer = torch.optim.LBFGS(combiner.parameters(), lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        objective = loss(combiner(x), y) + l2 * combiner.weight.pow(2).sum()
        objective.backward()
        return objective

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(loss(combiner(x), y))


def router_loss(logits, target):
    """A router's binary cross-entropy: its one logit against "the image comes from the router's sources"."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)


def gate_start(n, k, j):
    """The first combiner input of gate j (combiner_input()'s layout: n members' k logits each, then per gate those
    logits times g, and g): g itself is n * k columns further."""
    return n * k + j * (n * k + 1)


def describe_routers(model, x_val, sources):
    """Print each routed gate's mean g (out of fold) on validation rows of its sources and elsewhere."""
    n, k = len(model.members), model.config.num_labels
    for j, gate in enumerate(model.config.gates):
        if "router" in gate:
            g = x_val[:, gate_start(n, k, j) + n * k].numpy()
            mine = np.isin(sources, model.config.routers[gate["router"]]["sources"])
            print(f"router of {model.config.members[gate['member']]['source']}: mean g {g[mine].mean():.3f} on its "
                  f"sources' {mine.sum()} validation images (out of fold), {g[~mine].mean():.3f} on the others")


def run(data_args, model_args, train_args, stack_args, command=""):
    if model_args.model != ENSEMBLE or model_args.combine != "logits":
        raise DataError("python -m train.stack fits an ensemble's logits combiner: pass --model ensemble "
                        "--members FOLDER ... (and --combine logits, the default).")
    if not data_args.splits_from:
        raise DataError("pass --splits-from the members' run (its splits.json), so the members are scored on "
                        "images none of them trained on.")
    if not 0 < stack_args.fit_fraction < 1:
        raise DataError(f"--fit-fraction takes a share between 0 and 1, not {stack_args.fit_fraction}.")
    if stack_args.folds == 1 or stack_args.folds < 0:
        raise DataError(f"--folds takes 2 or more folds (or 0 for the --fit-fraction split), not {stack_args.folds}.")
    if not 0 <= stack_args.expert_threshold < 1:
        raise DataError(f"--expert-threshold takes a g between 0 and 1, not {stack_args.expert_threshold}.")
    if stack_args.expert_members and (not stack_args.folds or model_args.flip_tta):
        raise DataError("--expert-members needs --folds (the expert is cross-fitted on the validation images it "
                        "takes) and no --flip-tta (an expert's switch is per image, not linear in the two views).")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    work, final = output_paths(train_args.output)
    run_config = {**as_dict(data_args, model_args, train_args, stack_args), "command": command}
    check_output(work, final, train_args, run_config)
    set_seed(train_args.seed)
    splits, scrub_report, counts = splits_from_run(data_args.splits_from, guard=resolve_guard(data_args.guard),
                                                   processes=data_args.preprocess_workers)
    model = create_model(ENSEMBLE, members=model_args.members, drop_members=model_args.drop_members, combine="logits",
                         flip_tta=model_args.flip_tta, gate=stack_args.gate,
                         route_members=stack_args.route_members, expert_members=stack_args.expert_members,
                         expert_threshold=stack_args.expert_threshold).eval()
    config = data_config_of(model)
    labels, sources = np.asarray(splits["validation"]["label"]), np.asarray(splits["validation"]["source"])
    fit, rest, fold = fit_plan(labels, sources, stack_args.folds, stack_args.fit_fraction, train_args.seed)
    if stack_args.folds and len(labels) < 2 * stack_args.folds:
        raise DataError(f"the members' validation split ({len(labels)} images) is too small for --folds "
                        f"{stack_args.folds}: pass fewer folds, or train the members on more images.")
    if not len(fit) or not len(rest):
        raise DataError(f"the members' validation split ({len(labels)} images) is too small to share "
                        f"between fitting the combiner and calibrating it: train the members on more images, "
                        f"or change --fit-fraction ({stack_args.fit_fraction}).")
    start = time.time()
    reencode = data_args.reencode_jpeg
    scores_val, y_val = member_scores(model, splits["validation"], train_args, "validation", stack_args.cache_dir,
                                      reencode)
    scores_test, y_test = member_scores(model, splits["test"], train_args, "test", stack_args.cache_dir, reencode)
    scored_s = time.time() - start
    x_val = routed_inputs(model, scores_val, sources, router_folds(labels, sources, stack_args.folds, train_args.seed),
                          stack_args.router_l2)
    with torch.no_grad():
        x_test = combiner_input_of(model, scores_test)
    describe_routers(model, x_val, sources)
    val_logits, fit_loss = fit_with_calibration(model.combiner, x_val, y_val, fit, rest, fold, stack_args.l2)
    with torch.no_grad():
        test_logits = model.combiner(x_test).numpy()
    if model.config.experts:
        val_logits = fit_experts(model, x_val, y_val, fold, stack_args.l2, val_logits).numpy()
        test_logits = apply_experts(model, x_test, test_logits).numpy()
    val = ev.classification_metrics(y_val[rest].numpy(), ev.fake_probability_of(val_logits))
    scored_on = (f"out of fold ({stack_args.folds} folds)" if stack_args.folds else f"on the other {len(rest)}")
    print(f"combiner fitted on {len(fit)} validation images (loss {fit_loss:.4f}); {scored_on}: "
          f"accuracy {val['accuracy']:.4f}, AUC {val['auc']:.4f}; weights {model.combiner.weight.detach().numpy().round(3).tolist()}")

    os.makedirs(os.path.join(work, CHECKPOINT))
    write_json(os.path.join(work, RUN_CONFIG), run_config)
    save_file(cpu_state_dict(model), os.path.join(work, BEST))
    splits = {**splits, "validation": splits["validation"].select(rest)}
    datasets = {name: ImageDataset(rows, config, reencode_quality=reencode) for name, rows in splits.items()}
    state = {"epoch": 1, "best_epoch": 1, "best_score": val["auc"], "stale_epochs": 0, "train_seconds": scored_s,
             "train_images": len(labels) + len(splits["test"]),
             "history": [{"epoch": 1, "train_loss": fit_loss, "val_loss": float(torch.nn.functional.cross_entropy(
                 torch.as_tensor(val_logits), y_val[rest])), "val_accuracy": val["accuracy"], "val_auc": val["auc"],
                 "lr": 1.0, "seconds": time.time() - start}]}
    precomputed = {"validation": (val_logits, y_val[rest].numpy(), np.arange(len(rest))),
                   "test": (test_logits, y_test.numpy(), np.arange(len(y_test)))}
    image_loaders = {name: make_loader(ds, train_args, shuffle=False) for name, ds in datasets.items()}
    return finish(model, accelerator, datasets, image_loaders, splits, state, run_config, scrub_report, counts, work,
                  final, train_args, precomputed=precomputed)


if __name__ == "__main__":
    sys.exit(main())
