"""Look at the data before training on it (the study's OSEMN "Explore" step).

    python -m train.explore --data ../shared/data/faces140k --data ../shared/data/ciplab --output docs/data-report

writes `report.md` (every figure with a caption, a summary table and a shortcut check), `summary.json` (the
numbers) and the figures as PNG. The data go through training's own `load_sources`, `scrub` and `split`, with the
same flags and defaults, so the counts here are the counts a training run sees.

The shortcut check is the point: if fakes and reals of one source differ in file format, JPEG quality or pixel
size, a model can score well by reading the encoding instead of the face. Sizes, formats and JPEG qualities come
from the image headers; only the sampled images are decoded here (the scrub decodes each image once, for its
perceptual hash).
"""

import dataclasses
import os
import random
import shlex
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

import datasets
import imagehash
import matplotlib
import numpy as np
from PIL import JpegImagePlugin
from sklearn.metrics import roc_auc_score

from deepfake_detector.images import ID2LABEL, LABEL2ID, DataError, load_image, open_image
from deepfake_detector.layout import write_json
from train.config import DataArguments, parse_args
from train.data import (
    class_counts,
    image_bytes,
    load_sources,
    pool_folders,
    resolve_guard,
    scrub,
    source_facts,
    source_name,
    split,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

PROG = "python -m train.explore"
CLASSES = ("fake", "real")
COLORS = {"fake": "tab:red", "real": "tab:blue"}
ALL_SOURCES = "all sources"
FIGURES = ("counts.png", "dimensions.png", "formats.png", "jpeg_quality.png", "file_size.png", "duplicates.png",
           "samples.png")

# A feature "differs" between the classes when the shares of its values differ by more than SHORTCUT_DIFFERENCE in
# total (total variation distance: 0 = the same shares, 1 = no value in common), and by more than 95 % of SHUFFLES
# shufflings of the labels give, so that chance in a small source does not warn.
SHORTCUT_DIFFERENCE = 0.10
SHUFFLES = 200
# JPEG quality medians further apart than this warn on their own.
QUALITY_GAP = 2


def _training_field(name):
    """The training CLI's flag of that name (same default and help): explore scrubs and splits exactly as training."""
    original = {f.name: f for f in dataclasses.fields(DataArguments)}[name]
    if original.default_factory is not dataclasses.MISSING:
        return field(default_factory=original.default_factory, metadata=original.metadata)
    return field(default=original.default, metadata=original.metadata)


@dataclass
class ExploreArguments:
    data: list[str] = _training_field("data")
    pool: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "A pool built by python -m train.sources: each of its source folders is added "
                                    "to --data, and the report groups them by generator family and real collection"})
    output: str = field(default="", metadata={"help": "Folder for report.md, summary.json and the figures"})
    image_column: str = _training_field("image_column")
    label_column: str = _training_field("label_column")
    min_size: int = _training_field("min_size")
    near_duplicate_distance: int = _training_field("near_duplicate_distance")
    guard: str = _training_field("guard")
    val_fraction: float = _training_field("val_fraction")
    test_fraction: float = _training_field("test_fraction")
    max_eval_per_source: Optional[int] = _training_field("max_eval_per_source")
    seed: int = field(default=0, metadata={"help": "Seed of the split (training's --seed) and of the sampled images"})
    samples: int = field(default=8, metadata={"help": "Images shown per source and class in samples.png"})
    dpi: int = field(default=80, metadata={"help": "Resolution of the figures (keep the committed report small)"})

    def __post_init__(self):
        self.data = list(self.data) + [folder for pool in self.pool for folder in pool_folders(pool)]
        DataArguments(data=self.data, image_column=self.image_column, label_column=self.label_column,
                      min_size=self.min_size, near_duplicate_distance=self.near_duplicate_distance,
                      val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                      max_eval_per_source=self.max_eval_per_source)  # the same checks
        if not self.output:
            raise DataError("Pass --output: the folder report.md, summary.json and the figures go to.")
        if self.samples < 1 or self.dpi < 20:
            raise DataError("--samples must be at least 1 and --dpi at least 20.")


# ---------------------------------------------------------------------------------------------------------
# What one image's header says

# The JPEG standard's example luminance table (Annex K), which libjpeg (IJG) scales for its quality setting;
# natural (row-major) order, as PIL reports `img.quantization`.
IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])
JPEG_QUALITY_METHOD = (
    "JPEG quality is estimated from each file's luminance quantisation table (PIL `img.quantization[0]`): the IJG "
    "(libjpeg) quality 1-100 whose scaled standard table (JPEG Annex K, scaled as libjpeg's `jpeg_quality_scaling`, "
    "baseline-clamped to 1..255) is nearest in L1 distance. Files written by libjpeg, PIL, OpenCV and most web tools "
    "match one such table exactly; other encoders (cameras, Photoshop) get the nearest IJG equivalent, and the "
    "share of exact matches is reported.")


def ijg_table(quality):
    """libjpeg's luminance table for a quality setting (integer arithmetic, as libjpeg does it)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((IJG_LUMINANCE * scale + 50) // 100, 1, 255)


IJG_TABLES = np.stack([ijg_table(quality) for quality in range(1, 101)])


def jpeg_quality(img):
    """(quality, exact) of an opened JPEG: the nearest IJG quality, and whether the file uses exactly that table."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables:
        return None, False
    distance = np.abs(IJG_TABLES - np.asarray(tables[0], dtype=np.int64)).sum(axis=1)
    best = int(distance.argmin())
    return best + 1, bool(distance[best] == 0)


SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def header_facts(image):
    """Format, pixel size, JPEG quality and file size of one undecoded `datasets.Image` value (header only)."""
    if image.get("bytes"):
        source, file_bytes = image["bytes"], len(image["bytes"])
    else:
        source, file_bytes = image["path"], os.path.getsize(image["path"])
    with open_image(source) as img:
        # The format label holds everything about the encoding a model could pick up besides quality.
        kind = img.format or "unknown"
        quality, exact = (None, False)
        if kind == "JPEG":
            quality, exact = jpeg_quality(img)
            sampling = SUBSAMPLING.get(JpegImagePlugin.get_sampling(img))
            kind += f" {sampling}" if sampling else ""
        if img.mode != "RGB":
            kind += f" {img.mode}"
        width, height = img.size
    return {"format": kind, "width": width, "height": height, "jpeg_quality": quality, "standard_table": exact,
            "file_bytes": file_bytes}


# ---------------------------------------------------------------------------------------------------------
# Numbers


def class_difference(values, labels, rng):
    """How differently a value is spread over fakes and reals: (total variation distance, what 95 % of shufflings
    of the labels stay under). Labels must hold both classes."""
    codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)[1]
    labels = np.asarray(labels)

    def distance(label_order):
        fake = np.bincount(codes[label_order == LABEL2ID["fake"]], minlength=codes.max() + 1)
        real = np.bincount(codes[label_order == LABEL2ID["real"]], minlength=codes.max() + 1)
        return 0.5 * float(np.abs(fake / fake.sum() - real / real.sum()).sum())

    chance = np.quantile([distance(rng.permutation(labels)) for _ in range(SHUFFLES)], 0.95)
    return distance(labels), float(chance)


def separability(fake_values, real_values):
    """ROC-AUC of telling fake from real by one number, either way round: 0.5 = no information, 1 = perfect."""
    values = np.concatenate([np.asarray(fake_values, dtype=np.float64), np.asarray(real_values, dtype=np.float64)])
    auc = float(roc_auc_score(np.r_[np.ones(len(fake_values)), np.zeros(len(real_values))], values))
    return max(auc, 1 - auc)


def spread(values, digits=1):
    if not values:
        return None
    return {"median": round(float(np.median(values)), digits), "min": round(float(np.min(values)), digits),
            "max": round(float(np.max(values)), digits)}


def describe(facts):
    """The numbers for one class of one source."""
    qualities = [f["jpeg_quality"] for f in facts if f["jpeg_quality"] is not None]
    quality = None
    if qualities:
        exact = sum(f["standard_table"] for f in facts if f["jpeg_quality"] is not None)
        quality = {**spread(qualities), "values": dict(sorted(Counter(qualities).items())),
                   "standard_table_share": round(exact / len(qualities), 3)}
    return {
        "images": len(facts),
        "formats": dict(Counter(f["format"] for f in facts).most_common()),
        "jpeg_quality": quality,
        "width": spread([f["width"] for f in facts], 0),
        "height": spread([f["height"] for f in facts], 0),
        "aspect_ratio": spread([f["width"] / f["height"] for f in facts], 3),
        "pixel_sizes": dict(Counter(f"{f['width']}x{f['height']}" for f in facts).most_common(10)),
        "file_kb": spread([f["file_bytes"] / 1024 for f in facts]),
    }


# What a model could learn instead of the face: name -> the value of one image's facts.
SHORTCUT_FEATURES = {
    "file format": lambda f: f["format"],
    "JPEG quality": lambda f: f["jpeg_quality"],
    "pixel size": lambda f: f"{f['width']}x{f['height']}",
    "aspect ratio": lambda f: round(f["width"] / f["height"], 2),
}


def compare_classes(facts, labels, seed):
    """The shortcut check of one source: per feature, the class difference, what chance gives, and a verdict."""
    rng = np.random.default_rng(seed)
    checks = {}
    for name, value in SHORTCUT_FEATURES.items():
        rows = [(value(f), label) for f, label in zip(facts, labels) if value(f) is not None]
        if len({label for _, label in rows}) < 2:
            continue  # e.g. JPEG quality where one class has no JPEG at all: the format check says so
        difference, chance = class_difference(*zip(*rows), rng)
        checks[name] = {"difference": round(difference, 3), "chance_95": round(chance, 3),
                        "differs": difference > SHORTCUT_DIFFERENCE and difference > chance}
    by_class = {name: [f for f, label in zip(facts, labels) if ID2LABEL[label] == name] for name in CLASSES}
    if "JPEG quality" in checks:  # both classes hold JPEG files
        medians = [np.median([f["jpeg_quality"] for f in by_class[name] if f["jpeg_quality"] is not None])
                   for name in CLASSES]
        gap = abs(float(medians[0] - medians[1]))
        checks["JPEG quality"]["median_gap"] = round(gap, 1)
        checks["JPEG quality"]["differs"] |= gap > QUALITY_GAP
    # File size is reported, never flagged: at equal format, quality and pixel size it measures the content.
    bits_per_pixel = {name: [8 * f["file_bytes"] / (f["width"] * f["height"]) for f in by_class[name]]
                      for name in CLASSES}
    auc = separability(bits_per_pixel["fake"], bits_per_pixel["real"])
    checks["file size"] = {"auc_bits_per_pixel": round(auc, 3)}
    return checks


def shortcut_warnings(name, stats, checks, known=()):
    """One line per flagged feature of one source, saying how the classes differ and what to do.

    `known` features were already flagged within a source, so the pooled row does not repeat them: it only adds
    what pooling the sources creates (e.g. all fakes from one source, all reals from another).
    """
    present = [c for c in CLASSES if stats[c]["images"]]
    if len(present) < 2:
        other = "real" if present == ["fake"] else "fake"
        return [f"{name} holds only {present[0]} images: the classes cannot be compared within it, and a model may "
                f"learn this source's look (encoding, size, subject) as '{present[0]}'; check the pooled row and "
                f"add {other} images made the same way."]
    flagged = [feature for feature, check in checks.items() if check.get("differs") and feature not in known]
    if "pixel size" in flagged and "aspect ratio" in flagged:
        flagged.remove("aspect ratio")  # the pixel sizes already say it
    lines = []
    for feature in flagged:
        if feature == "file format":
            shares = {c: _shares(stats[c]["formats"]) for c in CLASSES}
            fix = "re-encode every image the same way (python -m train --reencode-jpeg 90) or fix the data"
        elif feature == "JPEG quality":
            shares = {c: f"median q{stats[c]['jpeg_quality']['median']:g} "
                         f"({_shares(stats[c]['jpeg_quality']['values'], 'q')})" for c in CLASSES}
            fix = "re-encode every image at one quality (python -m train --reencode-jpeg 90)"
        elif feature == "pixel size":
            shares = {c: _shares(stats[c]["pixel_sizes"]) for c in CLASSES}
            fix = "bring both classes to one size the same way before training, or fix the data"
        else:
            shares = {c: f"median {stats[c]['aspect_ratio']['median']:g}" for c in CLASSES}
            fix = "crop both classes to one shape the same way before training, or fix the data"
        lines.append(f"{name}: {feature} differs between the classes (fake: {shares['fake']}; real: {shares['real']})"
                     f" — a model can tell them apart by it alone: {fix}.")
    return lines


def _shares(counts, prefix=""):
    total = sum(counts.values())
    top = sorted(counts.items(), key=lambda item: -item[1])
    text = ", ".join(f"{prefix}{value} {count / total:.0%}" for value, count in top[:3])
    return text + (", ..." if len(top) > 3 else "")


def count_by_source(rows):
    counts = defaultdict(lambda: {"fake": 0, "real": 0})
    for source, label in zip(rows["source"], rows["label"]):
        counts[source][ID2LABEL[label]] += 1
    return {source: dict(c) for source, c in sorted(counts.items())}


def duplicate_numbers(kept, scrub_report):
    """Counts of the scrub's exact and near-duplicate groups, and which cross the classes or the sources."""
    members = defaultdict(list)
    for row, group in enumerate(kept["group"]):
        members[group].append(row)
    near = [rows for rows in members.values() if len(rows) > 1]
    labels, sources = list(kept["label"]), list(kept["source"])
    return {
        "exact_groups": len(scrub_report["exact_duplicate_groups"]),
        "exact_files": sum(len(g) for g in scrub_report["exact_duplicate_groups"]),
        "near_groups": len(near),
        "near_files": sum(len(rows) for rows in near),
        "near_groups_across_classes": sum(len({labels[r] for r in rows}) > 1 for rows in near),
        "near_groups_across_sources": sum(len({sources[r] for r in rows}) > 1 for rows in near),
    }


# ---------------------------------------------------------------------------------------------------------
# Figures: each function writes one PNG (or none when there is nothing to show) and returns its name


def _class_bars(ax, values_by_class, xlabel, max_distinct=12, bins=30):
    """Counts per class: side-by-side bars for few distinct values, overlaid step histograms otherwise."""
    distinct = sorted({v for values in values_by_class.values() for v in values})
    if not distinct:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    elif len(distinct) <= max_distinct:
        for offset, name in zip((-0.18, 0.18), CLASSES):
            counts = Counter(values_by_class[name])
            bars = ax.bar(np.arange(len(distinct)) + offset, [counts[v] for v in distinct], width=0.36,
                          color=COLORS[name], label=name)
            if len(distinct) <= 4:
                ax.bar_label(bars, fontsize=7)
        ax.set_xticks(range(len(distinct)), [f"{v:g}" if isinstance(v, float) else str(v) for v in distinct],
                      rotation=45 if len(distinct) > 5 else 0, fontsize=8)
        pad = max(0, 3 - len(distinct)) / 2  # one value: a centred pair of bars, not a wall of colour
        ax.set_xlim(-0.5 - pad, len(distinct) - 0.5 + pad)
    else:
        edges = np.histogram_bin_edges([v for values in values_by_class.values() for v in values], bins=bins)
        for name in CLASSES:
            ax.hist(values_by_class[name], bins=edges, histtype="step", linewidth=1.5, color=COLORS[name], label=name)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax.set_xlabel(xlabel, fontsize=9)
    ax.tick_params(labelsize=8)


def _save(fig, folder, name, dpi):
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=dpi)
    plt.close(fig)
    return name


def plot_counts(folder, summary, dpi):
    by_source = {source: summary["kept"].get(source, {"fake": 0, "real": 0}) for source in summary["sources"]}
    by_split = summary["splits"]
    many = len(by_source) > 6
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 0.45 * len(by_source) + 4), 4.2 if many else 3.2),
                             width_ratios=[max(len(by_source), 2), 3])
    for ax, table, title in ((axes[0], by_source, "per source (after the scrub)"), (axes[1], by_split, "per split")):
        names = list(table)
        for offset, label in zip((-0.2, 0.2), CLASSES):
            bars = ax.bar([i + offset for i in range(len(names))], [table[n][label] for n in names], width=0.4,
                          color=COLORS[label], label=label)
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=7 if many else 9, rotation=60 if many and table is by_source else 0,
                      ha="right" if many and table is by_source else "center")
        ax.set_title(f"Images {title}", fontsize=10)
        ax.margins(y=0.15)
    axes[0].set_ylabel("images")
    axes[0].legend(fontsize=8)
    return _save(fig, folder, "counts.png", dpi)


def plot_dimensions(folder, facts_by_source, dpi):
    features = (("width (px)", lambda f: f["width"]), ("height (px)", lambda f: f["height"]),
                ("aspect ratio (width / height)", lambda f: round(f["width"] / f["height"], 2)))
    fig, axes = plt.subplots(len(facts_by_source), len(features), figsize=(9, 2.3 * len(facts_by_source)),
                             squeeze=False)
    for row, (source, by_class) in enumerate(facts_by_source.items()):
        for col, (label, value) in enumerate(features):
            _class_bars(axes[row, col], {c: [value(f) for f in by_class[c]] for c in CLASSES}, label)
        axes[row, 0].set_ylabel(f"{source}\nimages", fontsize=9)
    axes[0, 0].legend(fontsize=8, ncol=2, loc="upper right")
    return _save(fig, folder, "dimensions.png", dpi)


def plot_formats(folder, stats, dpi):
    rows = [(source, c) for source in stats if source != ALL_SOURCES for c in CLASSES]
    formats = sorted({kind for source, c in rows for kind in stats[source][c]["formats"]})
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    left = np.zeros(len(rows))
    colors = plt.get_cmap("tab10")
    for i, kind in enumerate(formats):
        shares = np.array([stats[s][c]["formats"].get(kind, 0) / max(stats[s][c]["images"], 1) for s, c in rows])
        ax.barh(range(len(rows)), shares * 100, left=left, color=colors(i % 10), label=kind)
        left += shares * 100
    ax.set_yticks(range(len(rows)), [f"{s} · {c} ({stats[s][c]['images']})" for s, c in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the class's images (%)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="format", title_fontsize=8)
    return _save(fig, folder, "formats.png", dpi)


def _per_source_panels(count, columns=3):
    columns = min(count, columns)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes.flat


def plot_jpeg_quality(folder, facts_by_source, dpi):
    fig, axes = _per_source_panels(len(facts_by_source))
    for ax, (source, by_class) in zip(axes, facts_by_source.items()):
        _class_bars(ax, {c: [f["jpeg_quality"] for f in by_class[c] if f["jpeg_quality"] is not None]
                         for c in CLASSES}, "estimated JPEG quality")
        ax.set_title(source, fontsize=10)
    axes[0].set_ylabel("images", fontsize=9)
    axes[0].legend(fontsize=8, ncol=2, loc="upper right")
    return _save(fig, folder, "jpeg_quality.png", dpi)


def plot_file_size(folder, facts_by_source, dpi):
    fig, axes = _per_source_panels(len(facts_by_source))
    for ax, (source, by_class) in zip(axes, facts_by_source.items()):
        _class_bars(ax, {c: [f["file_bytes"] / 1024 for f in by_class[c]] for c in CLASSES}, "file size (KB)",
                    max_distinct=0)
        ax.set_title(source, fontsize=10)
    axes[0].set_ylabel("images", fontsize=9)
    axes[0].legend(fontsize=8, ncol=2, loc="upper right")
    return _save(fig, folder, "file_size.png", dpi)


def _thumbnail(img, side):
    img = img.copy()
    img.thumbnail((side, side))
    return img


def duplicate_pairs(data, kept, scrub_report, seed, limit=6):
    """Up to `limit` pairs (kind, row a, row b) of `data`: pairs across the classes first, then across sources."""
    rows_of_name = {name: i for i, name in enumerate(data["image_path"])}
    candidates = []
    for files in scrub_report["exact_duplicate_groups"]:
        rows = [rows_of_name[f] for f in files if f in rows_of_name]
        if len(rows) > 1:
            candidates.append(("exact copy", rows[0], rows[1]))
    members = defaultdict(list)
    for row, group in zip(kept["row"], kept["group"]):
        members[group].append(row)
    candidates += [("near duplicate", rows[0], rows[1]) for rows in members.values() if len(rows) > 1]
    labels, sources = list(data["label"]), list(data["source"])
    random.Random(seed).shuffle(candidates)
    candidates.sort(key=lambda pair: (labels[pair[1]] == labels[pair[2]], sources[pair[1]] == sources[pair[2]]))
    return candidates[:limit]


def plot_duplicates(folder, data, pairs, names, dpi, side=128):
    if not pairs:
        return None
    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.4, 2.35 * len(pairs)), squeeze=False)
    for (kind, a, b), row_axes in zip(pairs, axes):
        images = [load_image(image_bytes(data[i]["image"])) for i in (a, b)]
        distance = imagehash.phash(images[0]) - imagehash.phash(images[1])  # as the scrub measures it
        for ax, img, i in zip(row_axes, images, (a, b)):
            ax.imshow(_thumbnail(img, side))
            ax.set_xticks([])
            ax.set_yticks([])
            row = data[i]
            ax.set_title(f"{ID2LABEL[row['label']]} · {row['source']}\n{_shorten(names[row['image_path']])}", fontsize=7)
        row_axes[0].set_ylabel(f"{kind}\nphash distance {distance}", fontsize=8)
    return _save(fig, folder, "duplicates.png", dpi)


def sample_rows(kept, count, seed):
    """`count` random kept rows per (source, class), with a fixed seed."""
    rng = random.Random(seed)
    by_group = defaultdict(list)
    for row, (source, label) in enumerate(zip(kept["source"], kept["label"])):
        by_group[(source, ID2LABEL[label])].append(row)
    return {key: sorted(rng.sample(rows, min(count, len(rows)))) for key, rows in sorted(by_group.items())}


def plot_samples(folder, kept, samples, count, dpi, side=112):
    fig, axes = plt.subplots(len(samples), count, figsize=(1.3 * count + 0.4, 1.35 * len(samples)), squeeze=False)
    for row_axes, ((source, label), rows) in zip(axes, samples.items()):
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for ax, row in zip(row_axes, rows):
            ax.imshow(_thumbnail(load_image(image_bytes(kept[row]["image"])), side))
        row_axes[0].set_ylabel(f"{source}\n{label}", fontsize=8, color=COLORS[label])
    fig.subplots_adjust(wspace=0.04, hspace=0.06, left=0.08, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(os.path.join(folder, "samples.png"), dpi=dpi)
    plt.close(fig)
    return "samples.png"


def _shorten(name, length=28):
    base = os.path.basename(name)
    return base if len(base) <= length else base[:length - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# The report


def report_markdown(summary):
    """report.md from summary.json: a summary table, the shortcut check, then every figure with a caption."""
    stats, figures = summary["per_source"], set(summary["figures"])
    lines = ["# Data report", "",
             f"{summary['images_loaded']} images from {len(summary['sources'])} source(s) "
             f"({', '.join(summary['sources'])}); {summary['images_kept']} kept by the scrub and split with seed "
             f"{summary['seed']}. Reproduce with:", "", "```", summary["command"], "```", "",
             "## Summary", "",
             "| source | fake | real | format (fake / real) | JPEG quality, median (fake / real) | pixel size, "
             "most common (fake / real) | file size KB, median (fake / real) | shortcut check |",
             "|---|---|---|---|---|---|---|---|"]
    for source, entry in stats.items():
        fake, real = entry["fake"], entry["real"]
        flagged = [f for f, c in entry["checks"].items() if c.get("differs")]
        verdict = ("**differs: " + ", ".join(flagged) + "**") if flagged else (
            "one class only" if not (fake["images"] and real["images"]) else "no difference")
        lines.append(
            f"| {source} | {fake['images']} | {real['images']} | {_top(fake['formats'])} / {_top(real['formats'])} "
            f"| {_median(fake['jpeg_quality'])} / {_median(real['jpeg_quality'])} "
            f"| {_top(fake['pixel_sizes'])} / {_top(real['pixel_sizes'])} "
            f"| {_median(fake['file_kb'])} / {_median(real['file_kb'])} | {verdict} |")

    lines += sources_markdown(summary)
    lines += ["", "## Shortcut check", ""]
    if summary["warnings"]:
        lines += ["> **⚠ WARNING: fakes and reals differ in how they are stored.** A model trained on this data can "
                  "score well by reading the encoding instead of the face, and will fail on images stored any other "
                  "way.", ">"]
        lines += [f"> - **{w}**" for w in summary["warnings"]]
    else:
        lines += ["**No shortcut found:** within every source (and over all sources pooled) fakes and reals share "
                  "the same file formats, JPEG qualities and pixel sizes."]
    lines += ["", "How: within each source, and over all sources pooled (as training pools them), a feature is "
              f"flagged when the shares of its values differ between the classes by more than "
              f"{SHORTCUT_DIFFERENCE:.0%} in total (total variation distance) and by more than 95 % of {SHUFFLES} "
              f"random shufflings of the labels give; JPEG quality is also flagged when the class medians are more "
              f"than {QUALITY_GAP} points apart. File size is shown but not flagged: with format, quality and pixel "
              "size equal it measures image content (detail, noise), which the model sees anyway; its AUC says how "
              "well bits per pixel alone would tell fakes from reals.", "",
              "| source | " + " | ".join(f"{name}: difference (chance)" for name in SHORTCUT_FEATURES)
              + " | file size: AUC |", "|---" * (len(SHORTCUT_FEATURES) + 2) + "|"]
    for source, entry in stats.items():
        checks = entry["checks"]
        cells = [(f"**{checks[n]['difference']:.2f}** ({checks[n]['chance_95']:.2f})" if checks[n]["differs"]
                  else f"{checks[n]['difference']:.2f} ({checks[n]['chance_95']:.2f})") if n in checks else "—"
                 for n in SHORTCUT_FEATURES]
        auc = checks.get("file size", {}).get("auc_bits_per_pixel")
        lines.append(f"| {source} | " + " | ".join(cells) + f" | {'—' if auc is None else f'{auc:.2f}'} |")

    lines += ["", "## Class counts", "", "![class counts per source and per split](counts.png)", "",
              "*Images per class in each source after the scrub (left), and in each split training will use (right).*",
              "", "| source | " + " | ".join(f"{n} {c}" for n in summary["splits"] for c in CLASSES) + " |",
              "|---" * (2 * len(summary["splits"]) + 1) + "|"]
    for source in summary["sources"]:  # one row a source: the table stays readable for a pool of many sources
        cells = [str(summary["splits_by_source"][n].get(source, {}).get(c, 0)) for n in summary["splits"] for c in CLASSES]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(str(summary["splits"][n][c]) for n in summary["splits"] for c in CLASSES)
                 + " |")
    dropped = summary["dropped_by_reason"]
    lines += ["", "Dropped by the scrub: " + (", ".join(f"{n} {reason}" for reason, n in dropped.items()) if dropped
                                             else "none") + f" (minimum side {summary['min_size']} px).", ""]

    captions = {
        "dimensions.png": ("Image sizes", "Width, height and aspect ratio per class, one row per source."),
        "formats.png": ("File formats", "Share of each file format per source and class (JPEG with its chroma "
                        "subsampling; colour modes other than RGB are named)."),
        "jpeg_quality.png": ("JPEG quality", "Estimated JPEG quality per class, one panel per source. "
                             + JPEG_QUALITY_METHOD),
        "file_size.png": ("File size", "File size per class, one panel per source."),
    }
    for name, (title, caption) in captions.items():
        lines += [f"## {title}", "", f"![{title.lower()}]({name})", "", f"*{caption}*", ""]
        if name == "jpeg_quality.png":
            lines += ["| source | fake | real | files with an exact IJG table |", "|---|---|---|---|"]
            for source, entry in stats.items():
                qualities = [entry[c]["jpeg_quality"] for c in CLASSES]
                cells = [_shares(q["values"], "q") if q else "no JPEG" for q in qualities]
                exact = [f"{c} {q['standard_table_share']:.0%}" for c, q in zip(CLASSES, qualities) if q]
                lines.append(f"| {source} | {cells[0]} | {cells[1]} | {', '.join(exact) or '—'} |")
            lines.append("")

    duplicates = summary["duplicates"]
    lines += ["## Duplicates", "",
              f"Exact copies: {duplicates['exact_groups']} group(s), {duplicates['exact_files']} files (the scrub "
              "keeps one copy; a copy labelled both fake and real is dropped altogether). Near duplicates "
              f"(perceptual hash within {summary['near_duplicate_distance']} bits): {duplicates['near_groups']} "
              f"group(s), {duplicates['near_files']} files, {duplicates['near_groups_across_classes']} across the "
              f"classes and {duplicates['near_groups_across_sources']} across sources; each group stays inside one "
              "split.", ""]
    if "duplicates.png" in figures:
        lines += ["![duplicate pairs](duplicates.png)", "",
                  "*Sample duplicate pairs side by side (pairs across classes and sources first), with their "
                  "perceptual-hash distance. A pair across the classes is a fake made from that real photo, or a "
                  "mislabelled copy; a pair of different people means the hash matched look-alike faces on plain "
                  "backgrounds (harmless: the pair only stays in one split).*", "",
                  "| kind | first file | second file |", "|---|---|---|"]
        lines += [f"| {pair['kind']} | {pair['files'][0]} | {pair['files'][1]} |" for pair in duplicates["shown"]]
        lines.append("")
    lines += ["## Samples", "", "![random samples per source and class](samples.png)", "",
              f"*{summary['samples_per_class']} random images per source and class (seed {summary['seed']}); "
              "the files are listed in summary.json.*", ""]
    return "\n".join(lines)


def sources_markdown(summary):
    """Where each source comes from (its source.json, written by python -m train.sources), and the kept images by
    generator family and by real collection: what a model trained on this data has seen."""
    facts = summary.get("source_facts") or {}
    if not facts:
        return []
    kept = summary["kept"]
    lines = ["", "## Sources", "", "| source | family (fakes) / collection (reals) | fake | real | licence | repository @ commit |",
             "|---|---|---|---|---|---|"]
    families, collections = defaultdict(lambda: [0, []]), defaultdict(lambda: [0, []])
    for source in summary["sources"]:
        entry, counts = facts.get(source, {}), kept.get(source, {"fake": 0, "real": 0})
        what = " / ".join(x for x in (entry.get("family"), entry.get("collection")) if x) or "—"
        where = f"[{entry['repo']}]({entry.get('url', '')}) @ `{entry.get('commit', '')[:10]}`" if entry.get("repo") else "—"
        lines.append(f"| {source} | {what} | {counts['fake']} | {counts['real']} | {entry.get('license', '—')} | {where} |")
        for table, key, label in ((families, "family", "fake"), (collections, "collection", "real")):
            if counts[label]:
                name = entry.get(key) or f"not recorded ({source})"
                table[name][0] += counts[label]
                table[name][1].append(source)
    for title, table, label in (("Fakes by generator family", families, "fake"), ("Reals by collection", collections, "real")):
        lines += ["", f"### {title}", "", f"| {title.split()[-1]} | {label} images | sources |", "|---|---|---|"]
        lines += [f"| {name} | {n} | {', '.join(sources)} |" for name, (n, sources) in sorted(table.items(), key=lambda kv: -kv[1][0])]
    return lines


def _top(counts):
    return next(iter(counts), "—")


def _median(entry):
    return "—" if entry is None else f"{entry['median']:g}"


# ---------------------------------------------------------------------------------------------------------
# The command


def load_checked(sources, image_column, label_column):
    """`load_sources` (which names an empty folder itself); and both classes must be there."""
    data = load_sources(sources, image_column=image_column, label_column=label_column)
    counts = class_counts(data)
    if min(counts.values()) == 0:
        only, missing = ("fake", "real") if counts["fake"] else ("real", "fake")
        raise DataError(f"The data holds only {only} images ({counts[only]}): add {missing} images (a {missing}/ "
                        f"folder beside {only}/, or another --data), so the classes can be compared.")
    return data


def explore(args, command=""):
    """Write report.md, summary.json and the figures for `args.data` into `args.output`; returns the summary."""
    data = load_checked(args.data, args.image_column, args.label_column)
    # A row number to find each kept image again in `data`, and its path to find the scrub's duplicates.
    data = data.add_column("row", list(range(len(data))))
    data = data.add_column("image_path", [image.get("path") or f"<bytes {i}>" for i, image in enumerate(data["image"])])
    kept, scrub_report = scrub(data, min_size=args.min_size, near_duplicate_distance=args.near_duplicate_distance,
                               guard=resolve_guard(args.guard))
    if len(kept) == 0:
        raise DataError(f"No image survived the scrub ({scrub_report['dropped_by_reason']}): check the files.")
    splits = split(kept, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                   max_eval=args.max_eval_per_source)
    names = _display_names(data["image_path"], args.data)

    facts = [header_facts(image) for image in kept["image"]]
    labels, sources = list(kept["label"]), list(kept["source"])
    source_names = list(dict.fromkeys(source_name(s) for s in args.data))
    groups = {s: [i for i, name in enumerate(sources) if name == s] for s in source_names}
    if len(source_names) > 1:
        groups[ALL_SOURCES] = list(range(len(kept)))
    per_source, warnings = {}, []
    for source, rows in groups.items():
        by_class = {c: [facts[i] for i in rows if ID2LABEL[labels[i]] == c] for c in CLASSES}
        entry = {c: describe(by_class[c]) for c in CLASSES}
        both = all(by_class[c] for c in CLASSES)
        entry["checks"] = (compare_classes([facts[i] for i in rows], [labels[i] for i in rows], args.seed)
                           if both else {})
        known = ({f for e in per_source.values() for f, check in e["checks"].items() if check.get("differs")}
                 if source == ALL_SOURCES else set())  # the pooled row comes last
        per_source[source] = entry
        warnings += shortcut_warnings(source, entry, entry["checks"], known)

    samples = sample_rows(kept, args.samples, args.seed)
    pairs = duplicate_pairs(data, kept, scrub_report, args.seed)
    summary = {
        "command": command,
        "sources": source_names,
        "source_facts": {source_name(s): described for s in args.data if (described := source_facts(s))},
        "seed": args.seed,
        "min_size": args.min_size,
        "near_duplicate_distance": args.near_duplicate_distance,
        "images_loaded": len(data),
        "images_kept": len(kept),
        "loaded": count_by_source(data),
        "kept": count_by_source(kept),
        "splits": {name: class_counts(part) for name, part in splits.items()},
        "splits_by_source": {name: count_by_source(part) for name, part in splits.items()},
        "dropped_by_reason": scrub_report["dropped_by_reason"],
        "dropped": [{"file": names.get(d["file"], d["file"]), "reason": d["reason"]} for d in scrub_report["dropped"]],
        "duplicates": {**duplicate_numbers(kept, scrub_report),
                       "shown": [{"kind": kind, "files": [names[data[i]["image_path"]] for i in (a, b)]}
                                 for kind, a, b in pairs]},
        "per_source": per_source,
        "warnings": warnings,
        "jpeg_quality_method": JPEG_QUALITY_METHOD,
        "samples_per_class": args.samples,
        "samples": {f"{source}/{label}": [names[kept[i]["image_path"]] for i in rows]
                    for (source, label), rows in samples.items()},
    }

    os.makedirs(args.output, exist_ok=True)
    for name in FIGURES:  # a figure left from an earlier run would show data that is not there any more
        if os.path.exists(os.path.join(args.output, name)):
            os.remove(os.path.join(args.output, name))
    facts_by_source = {s: {c: [facts[i] for i in rows if ID2LABEL[labels[i]] == c] for c in CLASSES}
                       for s, rows in groups.items() if s != ALL_SOURCES}
    written = [
        plot_counts(args.output, summary, args.dpi),
        plot_dimensions(args.output, facts_by_source, args.dpi),
        plot_formats(args.output, per_source, args.dpi),
        plot_jpeg_quality(args.output, facts_by_source, args.dpi),
        plot_file_size(args.output, facts_by_source, args.dpi),
        plot_duplicates(args.output, data, pairs, names, args.dpi),
        plot_samples(args.output, kept, samples, args.samples, args.dpi),
    ]
    summary["figures"] = [name for name in written if name]
    write_json(os.path.join(args.output, "summary.json"), summary)
    with open(os.path.join(args.output, "report.md"), "w") as f:
        f.write(report_markdown(summary))
    return summary


def _display_names(paths, folders):
    """File names as `<source folder>/<path inside it>`: readable, and no machine's absolute paths in the report."""
    roots = [os.path.abspath(folder) for folder in folders if os.path.isdir(folder)]
    names = {}
    for path in paths:
        root = next((r for r in roots if os.path.abspath(path).startswith(r + os.sep)), None)
        names[path] = os.path.join(os.path.basename(root), os.path.relpath(path, root)) if root else path
    return names


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_args(argv, classes=(ExploreArguments,), prog=PROG)
    datasets.disable_progress_bars()
    try:
        summary = explore(args, command=f"{PROG} {shlex.join(argv)}")
    except DataError as e:
        print(f"{PROG.split()[-1]}: error: {e}", file=sys.stderr)
        return 2
    print(f"explore: {summary['images_kept']} of {summary['images_loaded']} images kept; report in "
          f"{os.path.join(args.output, 'report.md')}")
    for warning in summary["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
