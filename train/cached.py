"""Fine-tune the last blocks of a ViT detector over cached activations: what 2 CPU cores can afford.

    python -m train.cached --data ../shared/data/faces140k ... --crop-faces --model dinov2-vits14 --pretrained \\
        --freeze-blocks 10 --epochs 3 --output runs/dinov2-vits14

DINOv2's early blocks stay as pretrained (frozen), so their output for an image never changes: it is computed
once per image (the eval transform, float32) and cached on disk, and every epoch trains only the last
`12 - freeze_blocks` blocks, the final norm and the head over the cache. On 2 CPU cores a full ViT-S/14 pass at
224 px runs ~9 images/s; training two blocks over the cache costs about half of one pass per epoch, where
full fine-tuning would cost three. The saved model is the whole network (a plain timm ViT in Hub layout): the
frozen blocks are the pretrained ones, the rest trained.

Everything else is train/loop.py's: the same data preparation, Accelerate loop, checkpoints (`--resume`,
`--time-limit-minutes`), early stopping, and `finish` (temperature, thresholds, test metrics, robustness,
Hub folder). The clean validation and test logits come from the cache (exactly the full model's output, as the
cache holds float32 activations of the same transform); the degraded test copies (`--robustness`) go through
the full model. The cache is keyed by the images, their face boxes, the model's frozen weights and input size,
so a rerun (or another run over the same rows) reuses it. Only clean images are cached: the training-time
augmentations of train/loop.py (flips, crops, JPEG) would need one cache entry per variant.
"""

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

from deepfake_detector.card import fmt
from deepfake_detector.images import DataError
from deepfake_detector.layout import write_json
from deepfake_detector.models import VIT_ARCHITECTURES, create_model, data_config_of
from train import evaluate as ev
from train.config import CONFIG_CLASSES, as_dict, command_line, output_paths, parse_args
from train.data import ImageDataset
from train.loop import (
    BEST,
    CHECKPOINT,
    RUN_CONFIG,
    STATE,
    check_output,
    cpu_state_dict,
    finish,
    make_loader,
    load_splits,
    make_scheduler,
    save_checkpoint,
)

CACHE = os.path.join(os.path.expanduser(os.environ.get("DEEPFAKE_CACHE", "~/.cache/deepfake-detector")), "activations")


@dataclass
class CachedRunArguments:
    """What every run over the activation cache takes (train.cached, train.probe)."""
    cache_dir: str = field(default=CACHE, metadata={"help": "Where cached activations are kept (reused by reruns)"})


@dataclass
class CacheArguments(CachedRunArguments):
    freeze_blocks: int = field(default=10, metadata={
        "help": "Blocks 0..N-1 stay pretrained and are cached; blocks N.. (and the norm and head) train"})
    head_only: bool = field(default=False, metadata={
        "help": "Train only the final norm and the head (a linear probe of the pretrained features): blocks N.. "
                "stay pretrained too, run once over the cache, and an epoch then takes seconds"})


def main(argv=None):
    data_args, model_args, train_args, cache_args = parse_args(argv, classes=(*CONFIG_CLASSES, CacheArguments),
                                                               prog="python -m train.cached")
    try:
        run(data_args, model_args, train_args, cache_args,
            command=command_line(argv, prog="python -m train.cached"))
    except DataError as e:
        print(f"train.cached: error: {e}", file=sys.stderr)
        return 2
    return 0


class Split(torch.nn.Module):
    """A timm ViT cut after `n` blocks: `prefix` (frozen, cached) and `suffix` (trained)."""

    def __init__(self, model, n, head_only=False):
        super().__init__()
        if model.pretrained_cfg.get("architecture") not in VIT_ARCHITECTURES:
            raise DataError(f"python -m train.cached trains ViT models ({', '.join(VIT_ARCHITECTURES)}): "
                            "train the others with python -m train.")
        if not 0 <= n < len(model.blocks):
            raise DataError(f"--freeze-blocks takes 0 to {len(model.blocks) - 1} (the model has {len(model.blocks)} blocks).")
        if model.global_pool != "token":
            raise DataError(f"python -m train.cached needs a ViT pooled on its CLS token, not {model.global_pool!r}.")
        self.model, self.n, self.head_only = model, n, head_only
        for module in [model.patch_embed, *model.blocks[:n], *(model.blocks[n:] if head_only else [])]:
            module.requires_grad_(False)
        model.cls_token.requires_grad_(False)
        model.pos_embed.requires_grad_(False)

    @torch.no_grad()
    def prefix(self, pixels):
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(pixels))))
        for block in m.blocks[:self.n]:
            x = block(x)
        return x

    def forward(self, tokens):
        """Logits from the prefix's output; with `head_only`, from `frozen_suffix`'s output instead."""
        m = self.model
        if not self.head_only:
            for block in m.blocks[self.n:]:
                tokens = block(tokens)
        return m.forward_head(m.norm(tokens))

    @torch.no_grad()
    def frozen_suffix(self, tokens):
        """The CLS token after the (frozen) blocks N..: all a head-only model reads, as the norm works token by
        token and the head pools the CLS token."""
        for block in self.model.blocks[self.n:]:
            tokens = block(tokens)
        return tokens[:, :1]

    def frozen_fingerprint(self):
        h = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            if name.startswith(("cls_token", "pos_embed", "patch_embed")) or any(
                    name.startswith(f"blocks.{i}.") for i in range(self.n)):
                h.update(name.encode())
                h.update(tensor.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def _model_inputs(fingerprint, config, n, reencode=None):
    inputs = [fingerprint, n, config["input_size"], config["mean"], config["std"], config["interpolation"]]
    return json.dumps(inputs + ([{"reencode_jpeg": reencode}] if reencode else [])).encode()


def model_key(fingerprint, config, n, reencode=None):
    """What the cached activations depend on besides the image: the frozen weights, the cut, the transform and
    the JPEG re-encoding (--reencode-jpeg)."""
    return hashlib.sha256(_model_inputs(fingerprint, config, n, reencode)).hexdigest()[:20]


def row_keys(rows):
    """One key per row: the image file (its absolute path, as a run's splits.json stores paths relative to where
    it ran; or its bytes' hash) and its face box."""
    boxes = rows["face_box"] if "face_box" in rows.column_names else [None] * len(rows)
    return [f"{os.path.abspath(image['path']) if image.get('path') else image.get('path')}|{box}|"
            f"{hashlib.sha256(image['bytes']).hexdigest() if image.get('bytes') else ''}"
            for image, box in zip(rows["image"], boxes)]


def cache_key(keys, fingerprint, config, n, reencode=None):
    """The cache folder's name: the model key's inputs and every row's key (row_keys)."""
    h = hashlib.sha256(_model_inputs(fingerprint, config, n, reencode))
    for key in keys:
        h.update(key.encode())
    return h.hexdigest()[:20]


def cached_rows(cache_dir, model, exclude, having="activations.npy"):
    """{row key: (folder, index)} of every row already computed in `cache_dir` under the same frozen prefix, in
    folders that hold the file `having` (the activations, or features computed from them)."""
    found = {}
    for name in sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []:
        folder = os.path.join(cache_dir, name)
        meta, progress = os.path.join(folder, "rows.json"), os.path.join(folder, "done.json")
        if name == exclude or not all(map(os.path.isfile, (meta, progress, os.path.join(folder, having)))):
            continue
        with open(meta) as f:
            saved = json.load(f)
        if saved.get("model") != model or not json.load(open(progress)).get("complete"):
            continue
        for i, key in enumerate(saved["rows"]):
            found.setdefault(key, (folder, i))
    return found


def cached_activations(split_model, rows, config, cache_dir, name, batch_size, num_workers, reencode=None):
    """[rows, tokens, dim] float32 memmap of the frozen prefix's output for every row (computed once, resumable),
    each image put through one JPEG encoding at quality `reencode` first where given (--reencode-jpeg).

    Rows an earlier cache of the same frozen prefix holds (another split, a run over fewer sources) are copied from
    it, so adding sources to a run costs only the new images."""
    fingerprint = split_model.frozen_fingerprint()
    model, keys = model_key(fingerprint, config, split_model.n, reencode), row_keys(rows)
    folder = os.path.join(cache_dir, cache_key(keys, fingerprint, config, split_model.n, reencode))
    path, progress, meta = (os.path.join(folder, f) for f in ("activations.npy", "done.json", "rows.json"))
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        probe = split_model.prefix(torch.zeros(1, *config["input_size"]))
    shape = (len(rows), *probe.shape[1:])
    state = json.load(open(progress)) if os.path.isfile(progress) and os.path.isfile(path) else None
    if state is None:  # a new cache: copy what other caches hold, then compute the rest in order
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        found = cached_rows(cache_dir, model, exclude=os.path.basename(folder))
        reused = [i for i, key in enumerate(keys) if key in found]
        others = {}
        for i in tqdm(reused, desc=f"copying {name} rows cached before", leave=False):
            other, j = found[keys[i]]
            if other not in others:
                others[other] = np.load(os.path.join(other, "activations.npy"), mmap_mode="r")
            array[i] = others[other][j]
        array.flush()
        state = {"todo": [i for i, key in enumerate(keys) if key not in found], "done": 0, "complete": False}
        write_json(meta, {"model": model, "rows": keys})
        write_json(progress, state)
        if reused:
            print(f"cache {name}: {len(reused)} of {len(rows)} images copied from earlier caches")
    elif "todo" not in state:  # a cache written before rows were reused: computed in order up to "rows"
        state = {"todo": list(range(len(rows))), "done": state["rows"], "complete": state["rows"] >= len(rows)}
        write_json(meta, {"model": model, "rows": keys})
        write_json(progress, state)
    array = np.lib.format.open_memmap(path, mode="r+")
    todo = state["todo"][state["done"]:]
    if todo:
        dataset = torch.utils.data.Subset(ImageDataset(rows, config, reencode_quality=reencode), todo)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        start = time.time()
        for pixels, _, index in tqdm(loader, desc=f"caching {name} ({len(todo)} images)", leave=False):
            array[index.numpy()] = split_model.prefix(pixels).numpy()
            state["done"] += len(index)
            if state["done"] % (batch_size * 8) == 0:
                array.flush()
                write_json(progress, state)
        print(f"cached {name}: {len(todo)} images in {time.time() - start:.0f} s → {folder}")
    if not state["complete"]:
        array.flush()
        state["complete"] = True
        write_json(progress, state)
    return np.load(path, mmap_mode="r")


@torch.no_grad()
def map_cached(fn, array, batch_size, desc):
    """`fn` over every cached row, a batch at a time read from the memmap: its outputs concatenated, in memory."""
    return np.concatenate([fn(torch.from_numpy(np.array(array[i:i + batch_size]))).numpy()
                           for i in tqdm(range(0, len(array), batch_size), desc=desc, leave=False)])


def cls_tokens(split_model, array, batch_size, name):
    """[rows, 1, dim]: the frozen suffix's CLS token for every cached row (in memory: 1.5 kB a row)."""
    start = time.time()
    out = map_cached(split_model.frozen_suffix, array, batch_size, f"frozen blocks, {name}")
    print(f"{name}: CLS tokens of {len(out)} rows through the frozen blocks in {time.time() - start:.0f} s")
    return out


class Activations(torch.utils.data.Dataset):
    def __init__(self, array, labels):
        self.array, self.labels = array, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.array[i])), int(self.labels[i]), i


@torch.no_grad()
def predict_cached(suffix, loader):
    suffix.eval()
    logits, labels, index = [], [], []
    for tokens, y, i in loader:
        logits.append(suffix(tokens).float())
        labels.append(y)
        index.append(i)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(index).numpy()


def run(data_args, model_args, train_args, cache_args, command=""):
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=train_args.mixed_precision)
    work, final = output_paths(train_args.output)
    run_config = {**as_dict(data_args, model_args, train_args, cache_args), "command": command}
    check_output(work, final, train_args, run_config)
    set_seed(train_args.seed)
    splits, scrub_report, counts = load_splits(data_args, train_args, accelerator)
    model = create_model(model_args.model, image_size=model_args.image_size, pretrained=model_args.pretrained,
                         drop_rate=model_args.drop_rate, init_from=None if train_args.resume else model_args.init_from)
    config = data_config_of(model)
    split_model = Split(model, cache_args.freeze_blocks, head_only=cache_args.head_only).eval()
    activations = {name: cached_activations(split_model, rows, config, cache_args.cache_dir, name,
                                            train_args.batch_size, train_args.num_workers, data_args.reencode_jpeg)
                   for name, rows in splits.items()}
    if cache_args.head_only:
        activations = {name: cls_tokens(split_model, array, train_args.batch_size, name)
                       for name, array in activations.items()}
    sets = {name: Activations(activations[name], np.asarray(rows["label"])) for name, rows in splits.items()}
    weights = ImageDataset(splits["train"], config, balance_sources=data_args.balance_sources).row_weights
    loaders = {name: make_loader(ds, train_args, shuffle=name == "train") for name, ds in sets.items()}

    parameters = [p for p in split_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=train_args.learning_rate, weight_decay=train_args.weight_decay)
    scheduler = make_scheduler(optimizer, train_args, len(loaders["train"]))
    split_model, optimizer, scheduler, loaders["train"] = accelerator.prepare(split_model, optimizer, scheduler,
                                                                             loaders["train"])
    state = {"epoch": 0, "best_score": None, "best_epoch": None, "stale_epochs": 0, "history": [],
             "train_seconds": 0.0, "train_images": 0}
    if train_args.resume:
        accelerator.load_state(os.path.join(work, CHECKPOINT))
        with open(os.path.join(work, CHECKPOINT, STATE)) as f:
            state = json.load(f)
        print(f"resumed after epoch {state['epoch']} (best validation AUC {state['best_score']})")
    else:
        os.makedirs(work)
        write_json(os.path.join(work, RUN_CONFIG), run_config)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train_args.label_smoothing, reduction="none")
    session_start = time.time()
    for epoch in range(state["epoch"], train_args.epochs):
        set_seed(train_args.seed + epoch)
        start, total, seen = time.time(), 0.0, 0
        split_model.train()
        for tokens, labels, index in tqdm(loaders["train"], desc=f"epoch {epoch + 1}/{train_args.epochs}", leave=False):
            w = torch.ones(len(labels)) if weights is None else weights[index]
            losses = loss_fn(split_model(tokens), labels)
            loss = (losses * w / w.sum()).sum()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item() * len(labels)
            seen += len(labels)
        state["train_seconds"] += time.time() - start
        state["train_images"] += seen
        logits, labels, _ = predict_cached(split_model, loaders["validation"])
        val = ev.classification_metrics(labels, ev.fake_probability_of(logits))
        val_loss = float(torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels)))
        state["history"].append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss,
                                 "val_accuracy": val["accuracy"], "val_auc": val["auc"],
                                 "lr": scheduler.get_last_lr()[0], "seconds": time.time() - start})
        print(f"epoch {epoch + 1}/{train_args.epochs}: train loss {total / max(seen, 1):.4f}, val loss {val_loss:.4f}, "
              f"val accuracy {val['accuracy']:.4f}, val AUC {fmt(val['auc'], 4)} ({time.time() - start:.0f} s)")
        if state["best_score"] is None or val["auc"] > state["best_score"]:
            state.update(best_score=val["auc"], best_epoch=epoch + 1, stale_epochs=0)
            save_file(cpu_state_dict(model), os.path.join(work, BEST))
        else:
            state["stale_epochs"] += 1
        state["epoch"] = epoch + 1
        save_checkpoint(accelerator, work, state)
        if state["stale_epochs"] >= train_args.patience:
            print(f"early stop: no better validation AUC for {train_args.patience} epochs")
            break
        if train_args.time_limit_minutes is not None and time.time() - session_start > train_args.time_limit_minutes * 60:
            if state["epoch"] < train_args.epochs:
                print(f"time limit reached after epoch {state['epoch']}: continue with the same command and --resume")
                return None

    # The best weights, scored over the cache for the clean splits; finish() does the rest on images.
    from safetensors.torch import load_file

    model.load_state_dict(load_file(os.path.join(work, BEST)))
    precomputed = {name: predict_cached(split_model, loaders[name]) for name in ("validation", "test")}
    model.requires_grad_(True)
    datasets = {name: ImageDataset(rows, config, reencode_quality=data_args.reencode_jpeg) for name, rows in splits.items()}
    image_loaders = {name: make_loader(ds, train_args, shuffle=False) for name, ds in datasets.items()}
    return finish(model, accelerator, datasets, image_loaders, splits, state, run_config, scrub_report, counts, work,
                  final, train_args, precomputed=precomputed)


if __name__ == "__main__":
    sys.exit(main())
