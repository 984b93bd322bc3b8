"""Train one detector with Accelerate, evaluate it, and write a ready Hub folder.

    python -m train --data ../shared/data/faces140k --data ../shared/data/ciplab --model xception --output runs/xception
    accelerate launch -m train --data user/some-hub-dataset --model ensemble --members runs/tuned-cnn runs/xception --output runs/ensemble

The same script runs on CPU, one GPU, or several processes (`accelerate launch`, `torchrun`). A run works in
`<output>.partial/` (checkpoints, best weights) and is moved to `<output>` only when everything is written,
so `--output` never holds half a run. `--resume` continues an interrupted run exactly where it stopped.
"""

import csv
import json
import os
import shutil
import sys
import time
from dataclasses import replace

import datasets
import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from timm.data import Mixup
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from deepfake_detector.card import fmt
from deepfake_detector.images import ID2LABEL, DataError
from deepfake_detector.layout import save_model, write_json
from deepfake_detector.modeling_deepfake_ensemble import (
    DeepfakeEnsembleForImageClassification,
)
from deepfake_detector.models import BASE_MODELS, create_model, data_config_of, logits_of
from train import evaluate as ev
from train.config import as_dict, command_line, output_paths, parse_args
from train.data import (
    Augment,
    ImageDataset,
    as_rows,
    find_faces,
    load_sources,
    resolve_guard,
    sample_sources,
    scrub,
    source_facts,
    source_name,
    split,
    split_counts,
    splits_from_run,
)
from train.models import fold_temperature, trainable_parameters

CHECKPOINT = "checkpoint"
BEST = "best.safetensors"
STATE = "trainer_state.json"
RUN_CONFIG = "run_config.json"


def main(argv=None):
    data_args, model_args, train_args = parse_args(argv)
    try:
        train(data_args, model_args, train_args, command=command_line(argv))
    except DataError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    return 0


def train(data_args, model_args, train_args, command=""):
    accelerator = Accelerator(
        # Accelerate treats torchrun processes as MULTI_CPU only when told the run is on CPU.
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        mixed_precision=train_args.mixed_precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    work, final = output_paths(train_args.output)
    run_config = {**as_dict(data_args, model_args, train_args), "command": command}
    check_output(work, final, train_args, run_config)
    accelerator.wait_for_everyone()  # every process checks before the main one creates anything
    set_seed(train_args.seed)

    splits, scrub_report, counts = load_splits(data_args, train_args, accelerator)

    model = create_model(model_args.model, image_size=model_args.image_size, crop_pct=model_args.crop_pct,
                         pretrained=model_args.pretrained, width=model_args.width, members=model_args.members,
                         drop_members=model_args.drop_members, combine=model_args.combine,
                         flip_tta=model_args.flip_tta, drop_rate=model_args.drop_rate,
                         init_from=None if train_args.resume else model_args.init_from)
    config = data_config_of(model)
    # channels_last: 1.5x faster training for Xception's depthwise convolutions on CPU (measured), and the
    # layout GPUs' tensor cores want.
    model = model.to(memory_format=torch.channels_last)
    augment = Augment(flip=train_args.augment_flip, crop_scale=train_args.augment_crop_scale,
                      jpeg=train_args.augment_jpeg, blur=train_args.augment_blur, downscale=train_args.augment_downscale,
                      self_blend=train_args.augment_self_blend)
    datasets = {name: ImageDataset(rows, config, augment=augment if name == "train" else None,
                                   reencode_quality=data_args.reencode_jpeg, seed=train_args.seed,
                                   balance_sources=data_args.balance_sources if name == "train" else 0.0)
                for name, rows in splits.items()}
    loaders = {name: make_loader(ds, train_args, shuffle=name == "train") for name, ds in datasets.items()}

    parameters = trainable_parameters(model, model_args.train_members)
    optimizer = torch.optim.AdamW(parameters, lr=train_args.learning_rate, weight_decay=train_args.weight_decay)
    steps_per_epoch = -(-len(loaders["train"]) // train_args.gradient_accumulation_steps)
    scheduler = make_scheduler(optimizer, train_args, steps_per_epoch)
    model, optimizer, scheduler, loaders["train"], loaders["validation"], loaders["test"] = accelerator.prepare(
        model, optimizer, scheduler, loaders["train"], loaders["validation"], loaders["test"])

    state = {"epoch": 0, "best_score": None, "best_epoch": None, "stale_epochs": 0, "history": [],
             "train_seconds": 0.0, "train_images": 0}
    if train_args.resume:
        accelerator.load_state(os.path.join(work, CHECKPOINT))
        with open(os.path.join(work, CHECKPOINT, STATE)) as f:
            state = json.load(f)
        accelerator.print(f"resumed after epoch {state['epoch']} (best validation AUC {state['best_score']})")
    elif accelerator.is_main_process:
        os.makedirs(work)
        write_json(os.path.join(work, RUN_CONFIG), run_config)
    accelerator.wait_for_everyone()

    session_start = time.time()
    # Per-image losses, weighted by source in train_one_epoch (--balance-sources).
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train_args.label_smoothing, reduction="none")
    mix = None
    if train_args.mixup or train_args.cutmix:
        # timm's Mixup gives soft targets, which the same loss (with its label smoothing) takes as they are. It
        # draws from numpy's generator, seeded per epoch above, so resuming stays exact.
        mix = Mixup(mixup_alpha=train_args.mixup, cutmix_alpha=train_args.cutmix, label_smoothing=0.0,
                    num_classes=len(ID2LABEL))
    for epoch in range(state["epoch"], train_args.epochs):
        set_seed(train_args.seed + epoch)  # the epoch alone decides its randomness: resuming changes nothing
        datasets["train"].set_epoch(epoch)
        loaders["train"].set_epoch(epoch)
        start = time.time()
        train_loss, seen = train_one_epoch(model, loaders["train"], optimizer, scheduler, loss_fn, accelerator,
                                           model_args.train_members, mix=mix, weights=datasets["train"].weights,
                                           desc=f"epoch {epoch + 1}/{train_args.epochs}")
        state["train_seconds"] += time.time() - start
        state["train_images"] += seen
        logits, labels, _ = predict(model, loaders["validation"], accelerator)
        val = ev.classification_metrics(labels, ev.fake_probability_of(logits))
        val_loss = float(torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels)))
        score = val["auc"] if val["auc"] is not None else val["accuracy"]
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_accuracy": val["accuracy"], "val_auc": val["auc"],
                                 "lr": scheduler.get_last_lr()[0], "seconds": time.time() - start})
        accelerator.print(f"epoch {epoch + 1}/{train_args.epochs}: train loss {train_loss:.4f}, val loss "
                          f"{val_loss:.4f}, val accuracy {val['accuracy']:.4f}, val AUC {fmt(val['auc'], 4)} "
                          f"({time.time() - start:.0f} s)")
        if state["best_score"] is None or score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch + 1, stale_epochs=0)
            if accelerator.is_main_process:
                save_file(cpu_state_dict(accelerator.unwrap_model(model)), os.path.join(work, BEST))
        else:
            state["stale_epochs"] += 1
        state["epoch"] = epoch + 1
        save_checkpoint(accelerator, work, state)
        if state["stale_epochs"] >= train_args.patience:
            accelerator.print(f"early stop: no better validation AUC for {train_args.patience} epochs")
            break
        if train_args.time_limit_minutes is not None and time.time() - session_start > train_args.time_limit_minutes * 60:
            if state["epoch"] < train_args.epochs:
                accelerator.print(f"time limit reached after epoch {state['epoch']}: continue with the same command "
                                  "and --resume")
                return None
    return finish(model, accelerator, datasets, loaders, splits, state, run_config, scrub_report, counts, work, final,
                  train_args)


def load_splits(data_args, train_args, accelerator):
    """(splits, scrub report, counts): those of the run --splits-from names (the rows of its sources among --data),
    else --data scrubbed and split.

    With both, the run's rows keep their splits and the --data sources that run did not have are scrubbed, cropped
    and split as usual and added: a model trained on a larger pool is then tested on the same rows as the smaller
    one's (plus the new sources' test rows), and no row one of them trained on is in the other's test split."""
    if not data_args.splits_from:
        return prepare_data(data_args, train_args, accelerator)
    splits, report, counts = splits_from_run(data_args.splits_from, guard=resolve_guard(data_args.guard),
                                              processes=data_args.preprocess_workers,
                                              sources=[source_name(source) for source in data_args.data])
    dropped = report["sources_left_out"]
    if dropped:  # a specialist on some of the run's sources: their rows, in the run's splits
        accelerator.print(f"--splits-from {data_args.splits_from}: only the --data sources' rows are kept "
                          f"({len(dropped)} of its sources left out: {', '.join(dropped)})")
    had = {s for part in splits.values() for s in set(part["source"])}
    new = [source for source in data_args.data if source_name(source) not in had]
    if not new:
        return splits, report, counts
    accelerator.print(f"--splits-from {data_args.splits_from} keeps its {len(had)} sources' splits; "
                      f"{len(new)} new sources are split here")
    added, added_report, _ = prepare_data(replace(data_args, data=new), train_args, accelerator)
    cropped = "face_box" in splits["train"].column_names
    if cropped != ("face_box" in added["train"].column_names):
        raise DataError(f"{data_args.splits_from} was {'' if cropped else 'not '}run with --crop-faces: pass the "
                        "same setting for the new sources.")
    splits = datasets.DatasetDict({name: datasets.concatenate_datasets([splits[name], as_rows(added[name])])
                                   for name in splits})
    return splits, {**report, "added_sources": added_report}, split_counts(splits)


def prepare_data(data_args, train_args, accelerator):
    """Load, scrub, crop faces and split: every process the same way (seeded); the main process prints."""
    sources = load_sources(data_args.data, image_column=data_args.image_column, label_column=data_args.label_column)
    if data_args.max_per_source:
        before = len(sources)
        sources = sample_sources(sources, data_args.max_per_source, seed=train_args.seed)
        accelerator.print(f"sample: {len(sources)} of {before} images, at most {data_args.max_per_source} of each "
                          "source and class (--max-per-source)")
    guard = resolve_guard(data_args.guard)
    workers = data_args.preprocess_workers if data_args.preprocess_workers > 1 else None
    kept, scrub_report = scrub(sources, min_size=data_args.min_size,
                               near_duplicate_distance=data_args.near_duplicate_distance, guard=guard, num_proc=workers)
    accelerator.print(f"guard: {scrub_report['guard']['checked']} images checked by {guard}, "
                      f"{scrub_report['guard']['dropped']} dropped" if guard else
                      "guard: none run (no holdout_guard.py here; --guard PATH names one)")
    if data_args.crop_faces:
        kept, scrub_report["faces"] = find_faces(kept, no_face=data_args.no_face, num_proc=workers)
        faces_report = scrub_report["faces"]
        accelerator.print(f"faces: none found in {faces_report['images_without_face']} images "
                          f"({'dropped' if data_args.no_face == 'drop' else 'kept whole'}): "
                          f"{faces_report['without_face_by_source'] or 'none'}")
    splits = split(kept, val_fraction=data_args.val_fraction, test_fraction=data_args.test_fraction,
                   seed=train_args.seed, max_eval=data_args.max_eval_per_source)
    counts = split_counts(splits)
    accelerator.print(f"scrub: kept {scrub_report['images_kept']} of {scrub_report['images_in']} images; "
                      f"dropped {scrub_report['dropped_by_reason'] or 'none'}; "
                      f"{len(scrub_report['near_duplicate_groups'])} near-duplicate groups kept within one split")
    for name, c in counts.items():
        accelerator.print(f"{name:>10}: {c['fake']} fake, {c['real']} real")

    return splits, scrub_report, counts


def check_output(work, final, train_args, run_config):
    """Refuse, before anything is written, to clobber a finished run or to mix two different runs."""
    if os.path.exists(final) and not train_args.overwrite:
        raise DataError(f"{final} already exists: choose another --output or pass --overwrite.")
    if train_args.resume:
        saved = os.path.join(work, RUN_CONFIG)
        if not os.path.isfile(os.path.join(work, CHECKPOINT, STATE)):
            raise DataError(f"Nothing to resume in {work}: start the run without --resume.")
        with open(saved) as f:
            before = json.load(f)
        if _comparable(before) != _comparable(run_config):
            raise DataError(f"{work} was started with other settings: resume with the command in {saved}.")
    elif os.path.exists(work):
        raise DataError(f"An interrupted run is in {work}: add --resume to continue it, or delete that folder.")


def _comparable(run_config):
    """Settings that must match to resume (how long this session may run and how it loads data may differ)."""
    training = {k: v for k, v in run_config["TrainingArguments"].items()
                if k not in ("resume", "time_limit_minutes", "num_workers", "overwrite")}
    return {**run_config, "TrainingArguments": training, "command": None}


def make_loader(dataset, train_args, shuffle):
    return torch.utils.data.DataLoader(
        dataset, batch_size=train_args.batch_size, shuffle=shuffle, num_workers=train_args.num_workers,
        drop_last=shuffle and len(dataset) > train_args.batch_size, pin_memory=torch.cuda.is_available(),
    )


def make_scheduler(optimizer, train_args, steps_per_epoch):
    total = max(1, steps_per_epoch * train_args.epochs)
    if train_args.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train_args.learning_rate, total_steps=total)
    warmup = min(total - 1, int(train_args.warmup_epochs * steps_per_epoch))
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)


def set_train_mode(model, train_members):
    model.train()
    inner = model.module if hasattr(model, "module") else model
    if isinstance(inner, DeepfakeEnsembleForImageClassification) and not train_members:
        inner.members.eval()  # frozen members keep their batch-norm statistics


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, train_members, mix=None, weights=None,
                    desc=""):
    set_train_mode(model, train_members)
    total_loss, seen = 0.0, 0
    for pixels, labels, index in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        targets = labels
        if mix is not None and len(labels) % 2 == 0:  # timm mixes pairs: an odd last batch goes unmixed
            pixels, targets = mix(pixels, labels)
        weight = torch.ones(len(labels)) if weights is None else weights[index.cpu()]
        weight = weight.to(pixels.device) / weight.sum().to(pixels.device)
        with accelerator.accumulate(model):
            losses = loss_fn(logits_of(model(pixels.contiguous(memory_format=torch.channels_last))), targets)
            loss = (losses * weight).sum()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        total_loss += loss.item() * len(labels)
        seen += len(labels)
    # Every process's share, summed: the loss and image count of the whole epoch.
    totals = accelerator.reduce(torch.tensor([total_loss, seen], device=accelerator.device, dtype=torch.float64))
    return float(totals[0] / max(1.0, float(totals[1]))), int(totals[1])


@torch.no_grad()
def predict(model, loader, accelerator):
    """Logits, labels and row indices of every sample exactly once, in dataset order."""
    model.eval()
    outputs = []
    for pixels, labels, index in loader:
        logits = logits_of(model(pixels)).float()
        outputs.append([t.cpu() for t in accelerator.gather_for_metrics((logits, labels, index))])
    logits, labels, index = (torch.cat(parts) for parts in zip(*outputs))
    order = index.argsort()
    return logits[order].numpy(), labels[order].numpy(), index[order].numpy()


def cpu_state_dict(model):
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(accelerator, work, state):
    folder = os.path.join(work, CHECKPOINT)
    accelerator.save_state(folder)
    if accelerator.is_main_process:
        write_json(os.path.join(folder, STATE), state)
    accelerator.wait_for_everyone()


def describe_gate(gate, members, routers):
    """A gate as metrics.json names it: its member's run, and its probe's run and class count, or its router's
    probes' runs and sources."""
    if "router" in gate:
        router = routers[gate["router"]]
        return {"member": members[gate["member"]],
                "router": {"probes": [members[j] for j in router["probes"]], "sources": router["sources"]}}
    return {"member": members[gate["member"]], "probe": members[gate["probe"]], "classes": len(gate["classes"])}


def finish(model, accelerator, datasets, loaders, splits, state, run_config, scrub_report, counts, work, final,
           train_args, precomputed=None, describe=None):
    """Best weights → temperature on validation → test metrics, robustness, plots → Hub folder → move in place.

    `precomputed` ({"validation": (logits, labels, index), "test": …}) skips scoring those clean splits again
    when the caller already has the model's logits for them (train/cached.py, from its exact activations).
    `describe` overrides or adds metrics.json entries (train/probe.py: its model name and head)."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(load_file(os.path.join(work, BEST)))
    precomputed = precomputed or {}
    val_logits, val_labels, _ = precomputed.get("validation") or predict(model, loaders["validation"], accelerator)
    test_logits, test_labels, test_index = precomputed.get("test") or predict(model, loaders["test"], accelerator)
    degraded = {}
    for kind in train_args.robustness:
        dataset = ImageDataset(splits["test"], data_config_of(unwrapped), degradation=kind,
                               reencode_quality=datasets["test"].reencode_quality)
        loader = accelerator.prepare_data_loader(make_loader(dataset, train_args, shuffle=False))
        degraded[kind] = predict(model, loader, accelerator)[0]
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return None

    temperature = ev.fit_temperature(val_logits, val_labels)
    p_test_raw = ev.fake_probability_of(test_logits)
    p_test = ev.fake_probability_of(test_logits, temperature)
    test = ev.classification_metrics(test_labels, p_test)
    test.update(ece_before=ev.expected_calibration_error(test_labels, p_test_raw),
                ece_after=ev.expected_calibration_error(test_labels, p_test))
    robustness = {"clean": {"accuracy": test["accuracy"], "auc": test["auc"]}}
    for kind, logits in degraded.items():
        m = ev.classification_metrics(test_labels, ev.fake_probability_of(logits, temperature))
        robustness[kind] = {"accuracy": m["accuracy"], "auc": m["auc"]}
    fold_temperature(unwrapped, temperature)
    unwrapped = unwrapped.float().cpu()

    data_args, model_args = run_config["DataArguments"], run_config["ModelArguments"]
    thresholds = ev.choose_thresholds(val_labels, ev.fake_probability_of(val_logits, temperature))
    test_sources = np.asarray(splits["test"]["source"])[test_index]
    is_ensemble = isinstance(unwrapped, DeepfakeEnsembleForImageClassification)
    metrics = {
        "model": model_args["model"],
        "architecture": "deepfake_ensemble" if is_ensemble else unwrapped.pretrained_cfg["architecture"],
        "library_name": "transformers" if is_ensemble else "timm",
        "pretrained": model_args["pretrained"],
        "base_model": None,
        "image_size": data_config_of(unwrapped)["input_size"][-1],
        "parameters": sum(p.numel() for p in unwrapped.parameters()),
        "labels": {"0": "fake", "1": "real"},
        "data": {"sources": list(data_args["data"]), "datasets": [source_name(s) for s in data_args["data"]],
                 # A pool source's own description and licence (its source.json), so the card can state them.
                 "about": {source_name(s): described for s in data_args["data"] if (described := source_facts(s))},
                 "licenses": {source_name(s): described["license"] for s in data_args["data"]
                              if (described := source_facts(s)).get("license")},
                 "counts": counts, "scrub": {k: scrub_report[k] for k in ("images_in", "images_kept", "dropped_by_reason")}},
        "test": test,
        "per_source": ev.per_source_metrics(test_labels, p_test, test_sources),
        "robustness": robustness,
        "temperature": temperature,
        "thresholds": thresholds,
        # At those thresholds, on test: how often the verdict is "uncertain", how often a committed one is right.
        "verdicts": ev.verdicts_by_source(test_labels, p_test, test_sources, thresholds),
        "training": {
            "epochs": train_args.epochs, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
            "wall_time_s": round(state["train_seconds"], 1),
            "train_images_per_s": round(state["train_images"] / max(state["train_seconds"], 1e-9), 1),
            "device": describe_device(accelerator), "command": run_config["command"], "seed": train_args.seed,
        },
        "inference": {"cpu_ms_per_image": round(ev.cpu_latency_ms(unwrapped, data_config_of(unwrapped)), 2)},
    }
    if is_ensemble:
        metrics["members"] = [m["source"] for m in unwrapped.config.members]
        if unwrapped.config.gates:
            metrics["gates"] = [describe_gate(g, metrics["members"], unwrapped.config.routers)
                                for g in unwrapped.config.gates]
        if unwrapped.config.experts:
            metrics["experts"] = [{"members": [metrics["members"][i] for i in e["members"]],
                                   "gate_of": metrics["members"][unwrapped.config.gates[e["gate"]]["member"]],
                                   "threshold": e["threshold"]} for e in unwrapped.config.experts]
    if model_args["pretrained"]:  # a feature probe (a one-member ensemble): its member's base
        architecture = (unwrapped.config.members[0]["architecture"] if is_ensemble
                        else unwrapped.pretrained_cfg["architecture"])
        metrics["base_model"] = BASE_MODELS.get(architecture, f"timm/{architecture}")
    if model_args.get("init_from"):  # continued training: the starting folder's lineage is this model's too
        metrics["init_from"] = model_args["init_from"]
        start = os.path.join(model_args["init_from"], "metrics.json")
        if os.path.isfile(start):
            with open(start) as f:
                metrics.update({k: v for k, v in json.load(f).items() if k in ("pretrained", "base_model")})

    metrics.update(describe or {})
    # config.json carries the thresholds: the app and pipeline() users read them there.
    save_model(unwrapped, work, dtype=getattr(torch, train_args.save_dtype), thresholds=thresholds)
    metrics["files"] = ev.save_plots(work, test, state["history"], test_labels, p_test)
    write_json(os.path.join(work, "metrics.json"), metrics)
    write_json(os.path.join(work, "scrub_report.json"), scrub_report)
    # Each split's files with their labels and sources as the run read them, so scoring a split again
    # (bench/score_models.py, --refit-thresholds) never re-derives labels from folder names.
    write_json(os.path.join(work, "splits.json"), {"counts": counts, "rows": {
        name: {"file": [_relative(image.get("path")) for image in rows["image"]], "label": list(rows["label"]),
               "source": list(rows["source"]),
               **({"face_box": list(rows["face_box"])} if "face_box" in rows.column_names else {})}
        for name, rows in splits.items()}})
    write_history(os.path.join(work, "history.csv"), state["history"])
    write_predictions(os.path.join(work, "test_predictions.csv"), splits["test"], test_index, test_labels, p_test)
    with open(os.path.join(work, "report.md"), "w") as f:
        f.write(ev.report_markdown(metrics))
    shutil.rmtree(os.path.join(work, CHECKPOINT))
    os.remove(os.path.join(work, BEST))
    if os.path.exists(final):  # --overwrite: the old run goes only now that the new one is complete
        shutil.rmtree(final)
    os.replace(work, final)
    accelerator.print(f"test accuracy {test['accuracy']:.4f}, AUC {fmt(test['auc'], 4)}, ECE "
                      f"{test['ece_before']:.3f} → {test['ece_after']:.3f}; model and report in {final}")
    accelerator.wait_for_everyone()
    return metrics


def describe_device(accelerator):
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    return f"{name} × {accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}"


def write_predictions(path, rows, index, labels, fake_probability):
    """Every test image with its label and calibrated P(fake): for error analysis, and to check a reload."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "source", "label", "fake_probability"])
        for i, label, p in zip(index, labels, fake_probability):
            row = rows[int(i)]
            writer.writerow([_relative(row["image"].get("path")) or "", row["source"], ID2LABEL[int(label)], f"{p:.8f}"])


def _relative(path):
    """Image paths as the user passed --data (relative to where the run started), not this machine's absolute ones."""
    return os.path.relpath(path) if path else path


def write_history(path, history):
    if not history:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
