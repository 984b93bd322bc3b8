"""Data for the detector: load image folders or Hub datasets, scrub them, split them, transform them.

Everything goes through Hugging Face `datasets`:

    sources = load_sources(["../shared/data/faces140k", "../shared/data/ciplab"])
    kept, report = scrub(sources, min_size=150)
    splits = split(kept, seed=0)                     # DatasetDict: train / validation / test

Labels (fake = 0, real = 1) and `load_image`, the one way any image enters the project, come from the core
(`deepfake_detector.images`): training decodes exactly as the app does.
"""

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass

import datasets
import imagehash
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from deepfake_detector import faces
from deepfake_detector.images import (
    ID2LABEL,
    LABEL2ID,
    MAX_PIXELS,
    DataError,
    degrade,
    load_image,
    open_image,
    reencode_jpeg,
)

SPLITS = ("train", "validation", "test")
# This workplace's hidden-evaluation guard (../shared/tools/holdout_guard.py beside the checkout): it lists the images
# that are near-duplicates of the images the project is scored on, which must never be trained on.
DEFAULT_GUARD = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools",
                                              "holdout_guard.py"))
GUARD_REASON = "near-duplicate of a hidden evaluation image (holdout guard)"


# ---------------------------------------------------------------------------------------------------------
# Sources


def source_name(source):
    """A short name for a data source: the folder name or the Hub dataset id."""
    return os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source


def source_facts(source):
    """What a source folder built by `python -m train.sources` says of itself (its source.json: repository, commit,
    generator family or real collection, licence), or {} for any other source."""
    path = os.path.join(source, "source.json") if os.path.isdir(source) else ""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


# The generator family of the fakes and the collection of the reals of each ../shared/data set (its README), for
# the sets that have no source.json.
SHARED_GROUPS = {"faces140k": ("StyleGAN 1", "FFHQ"), "faces140k-extra": ("StyleGAN 1", "FFHQ"),
                 "ciplab": ("Photoshop composite", "CIPLab portraits"), "stylegan2-thumbs": ("StyleGAN 2", "FFHQ"),
                 "lfw-faceswap": ("face swap", "LFW"), "sd-people": ("SD 1.x", "sd-people reals")}


def source_group(facts, name, label):
    """What a source's images of `label` (0 fake, 1 real) belong to: the generator family of its fakes, or the
    collection of its reals (the part before any parenthesis), from its source.json `facts`, else SHARED_GROUPS,
    else the source's name."""
    family, collection = SHARED_GROUPS.get(name, (name, name))
    if facts:
        family = facts.get("family") or family
        collection = (facts.get("collection") or collection).split(" (")[0]
    return family if label == 0 else collection


def groups_of(paths, sources, labels):
    """source_group of each image: its source's source.json is looked up in the folder the file sits in
    (`<...>/<source>/<class>/<file>`)."""
    facts, groups = {}, []
    for path, source, label in zip(paths, sources, labels):
        full, marker = os.path.abspath(path or ""), f"{os.sep}{source}{os.sep}"
        folder = full[:full.rindex(marker) + len(marker) - 1] if marker in full else ""
        if folder not in facts:
            facts[folder] = source_facts(folder) if folder else {}
        groups.append(source_group(facts[folder], source, int(label)))
    return groups


def pool_folders(pool):
    """The source folders of a pool built by `python -m train.sources`, in the manifest's order (its report.json),
    leaving out what the guard and the deduplication set aside and unfinished builds."""
    if not os.path.isdir(pool):
        raise DataError(f"{pool} is not a folder: pass the --out folder of python -m train.sources.")
    names = sorted(n for n in os.listdir(pool) if os.path.isfile(os.path.join(pool, n, "source.json")))
    report = os.path.join(pool, "report.json")
    if os.path.isfile(report):
        with open(report) as f:
            order = list(json.load(f).get("sources", {}))
        names.sort(key=lambda n: order.index(n) if n in order else len(order))
    if not names:
        raise DataError(f"{pool} holds no built sources (folders with a source.json): run python -m train.sources first.")
    return [os.path.join(pool, n) for n in names]


def load_sources(sources, *, image_column="image", label_column="label"):
    """Load and concatenate sources into one Dataset with columns image (undecoded), label, source, split.

    A source is a folder with `real/` and `fake/` class folders (or `train/`, `validation/`, `test/` folders of
    those), or a Hub dataset id. `split` keeps a source's own split names ("" for none).
    """
    if not sources:
        raise DataError("No data given: pass --data with an image folder (real/ and fake/ inside) or a Hub dataset id.")
    parts = []
    for source in sources:
        if os.path.isdir(source):
            if not any(files for _, _, files in os.walk(source)):
                # Asked for an empty folder's files explicitly, datasets fails with a bare ValueError of its own.
                raise DataError(f"{source} holds no image files: put .jpg/.png files in real/ and fake/ folders.")
            try:
                loaded = datasets.load_dataset("imagefolder", data_files=_folder_files(source))
            except (datasets.exceptions.DataFilesNotFoundError, datasets.data_files.EmptyDatasetError):
                raise DataError(f"{source} holds no image files: put .jpg/.png files in real/ and fake/ folders.") from None
            image_col, label_col = "image", "label"
        elif os.path.exists(source):
            raise DataError(f"{source} is a file, not a folder: pass a folder holding real/ and fake/ image folders.")
        elif source.count("/") == 1 and not source.startswith((".", "/")):
            try:
                loaded = datasets.load_dataset(source)
            except Exception as e:  # the Hub answers with many exception types; all mean the same to a user
                raise DataError(f"Could not load the Hub dataset {source} ({type(e).__name__}): check the id, "
                                "your login (hf auth login) and network.") from None
            image_col, label_col = image_column, label_column
        else:
            raise DataError(f"{source} does not exist: pass an image folder (real/ and fake/ inside) or a Hub dataset id.")
        for split_name, part in loaded.items():
            parts.append(_normalise(part, source, split_name, image_col, label_col))
    data = datasets.concatenate_datasets(parts)
    if len(data) == 0:
        raise DataError("The data holds no images: put .jpg/.png files in real/ and fake/ folders.")
    return data


def sample_sources(data, max_per_source, seed=0):
    """At most `max_per_source` rows of each source and class, a seeded sample; the rows keep their order."""
    rng = random.Random(seed)
    groups = defaultdict(list)
    for i, (source, label) in enumerate(zip(data["source"], data["label"])):
        groups[(source, label)].append(i)
    keep = sorted(i for key in sorted(groups) for i in (
        rng.sample(groups[key], max_per_source) if len(groups[key]) > max_per_source else groups[key]))
    return data.select(keep) if len(keep) < len(data) else data


def rows_dataset(images, labels, sources, face_boxes=None):
    """The plain columns of a split (image path/bytes, label, source, face_box where faces were found): what a
    run's splits.json restores and what `as_rows` makes of a freshly made split, so the two concatenate."""
    columns = {"image": [{"bytes": image.get("bytes"), "path": image.get("path")} for image in images],
               "label": list(labels), "source": list(sources)}
    if face_boxes is not None:
        columns["face_box"] = list(face_boxes)
    return datasets.Dataset.from_dict(columns)


def as_rows(data):
    """A split made here as the plain columns of `rows_dataset`."""
    return rows_dataset(data["image"], data["label"], data["source"],
                        data["face_box"] if "face_box" in data.column_names else None)


def _folder_files(folder):
    """The files of an image folder by split: its train/validation/test folders, else all of it as one.

    Passed to `load_dataset` explicitly: left to infer splits itself, `datasets` reads a split name in any
    file name ("fei_test_51.jpg") and silently leaves out every file that does not carry one.
    """
    splits = {name: os.path.join(folder, alias, "**") for alias in sorted(os.listdir(folder))
              if os.path.isdir(os.path.join(folder, alias))
              for name in [{"valid": "validation", "val": "validation", "dev": "validation"}.get(alias, alias)]
              if name in SPLITS}
    return splits or {"train": os.path.join(folder, "**")}


def _normalise(part, source, split_name, image_col, label_col):
    name = source_name(source)
    if os.path.isdir(source) and label_col not in part.column_names and image_col in part.column_names:
        # imagefolder drops the label column when a folder holds one class folder only (e.g. just real/).
        parents = [os.path.basename(os.path.dirname(image["path"])) for image in
                   part.cast_column(image_col, datasets.Image(decode=False))[image_col]]
        part = part.add_column(label_col, parents)
    for column in (image_col, label_col):
        if column not in part.column_names:
            raise DataError(f"{name} has no column {column!r} (it has {part.column_names}): "
                            "set --image-column / --label-column.")
    feature = part.features[label_col]
    if isinstance(feature, datasets.ClassLabel):
        names = [n.lower() for n in feature.names]
        labels = [names[i] for i in part[label_col]]
    else:
        labels = [str(v).lower() for v in part[label_col]]
    unknown = sorted(set(labels) - set(LABEL2ID))
    if unknown:
        raise DataError(f"{name} has classes {unknown} besides fake/real: name the class folders (or labels) "
                        "'fake' and 'real' only.")
    split_name = {"valid": "validation", "val": "validation", "dev": "validation"}.get(split_name, split_name)
    split_name = split_name if split_name in SPLITS else ""
    ids = [LABEL2ID[label] for label in labels]
    part = part.cast_column(image_col, datasets.Image(decode=False)).map(
        lambda batch, indices: {"label": [ids[i] for i in indices], "source": [name] * len(indices),
                                "split": [split_name] * len(indices)},
        with_indices=True, batched=True, remove_columns=[c for c in part.column_names if c != image_col])
    if image_col != "image":
        part = part.rename_column(image_col, "image")
    return part.cast(datasets.Features(
        image=datasets.Image(decode=False), label=datasets.ClassLabel(names=[ID2LABEL[0], ID2LABEL[1]]),
        source=datasets.Value("string"), split=datasets.Value("string"),
    ))


def image_bytes(image):
    """The raw bytes of an undecoded `datasets.Image` value."""
    if image.get("bytes"):
        return image["bytes"]
    with open(image["path"], "rb") as f:
        return f.read()


def image_name(image):
    return image.get("path") or "<bytes>"


# ---------------------------------------------------------------------------------------------------------
# The hidden-evaluation guard


def resolve_guard(guard):
    """The guard script to run, or None: 'auto' is this workplace's guard where it is installed (elsewhere there
    is none to run; the DEEPFAKE_GUARD environment variable names another, or 'none'), 'none' skips it, anything
    else must be the path of a holdout_guard.py."""
    if guard == "auto":
        guard = os.environ.get("DEEPFAKE_GUARD") or DEFAULT_GUARD
        if guard != "none" and not os.path.isfile(guard):
            return None
    if guard == "none":
        return None
    if not os.path.isfile(guard):
        raise DataError(f"no guard at {guard}: pass --guard PATH to holdout_guard.py, 'auto' or 'none'.")
    return guard


def run_guard(guard, folders):
    """Run the guard script over image folders: the files it lists as near-duplicates of hidden evaluation images,
    and how many images it checked. One guard process per folder, all at once."""
    runs = []
    try:
        for folder in folders:
            with tempfile.NamedTemporaryFile("r", suffix=".txt", delete=False) as listing:
                runs.append((listing.name, subprocess.Popen(
                    [sys.executable, guard, folder, "--write-exclude", listing.name], stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)))
        listed, checked = [], []
        for exclude, process in runs:
            stderr = process.communicate()[1]
            if process.returncode not in (0, 1):  # 1: it listed some
                raise DataError(f"the guard {guard} failed (exit {process.returncode}): {stderr.strip()[-300:]}")
            with open(exclude) as f:
                listed += [line.rstrip("\n") for line in f if line.strip()]
            found = re.search(r"(\d+) images checked", stderr)
            checked.append(int(found.group(1)) if found else None)
    finally:
        for exclude, process in runs:
            if process.poll() is None:
                process.kill()
            os.remove(exclude)
    return listed, None if None in checked else sum(checked)


def guard_listed(images, guard, processes=1):
    """Which of `images` (undecoded `datasets.Image` values) the guard lists, as sorted indices, and how many it
    checked. The guard script itself runs (`processes` copies, each over a share), over temporary folders of links
    to the files (images held as bytes are written there), so an image kept here is one `python holdout_guard.py
    DIR` passes. The links all end in .png: the guard skips other suffixes, and PIL reads the format from the
    bytes."""
    with tempfile.TemporaryDirectory(prefix="guard-") as folder:
        shares = [os.path.join(folder, str(k)) for k in range(max(1, min(processes, len(images))))]
        for share in shares:
            os.makedirs(share)
        for i, image in enumerate(images):
            link = os.path.join(shares[i % len(shares)], f"{i:09d}.png")
            if image.get("bytes"):
                with open(link, "wb") as f:
                    f.write(image["bytes"])
            else:
                os.symlink(os.path.abspath(image["path"]), link)
        listed, checked = run_guard(guard, shares)
    return sorted(int(os.path.basename(path)[:9]) for path in listed), checked


# ---------------------------------------------------------------------------------------------------------
# Scrub


def _inspect(example, min_size, max_pixels):
    """Per-image facts for the scrub: why to drop it (if at all), its size, content hash and perceptual hash."""
    facts = {"drop": "", "width": 0, "height": 0, "sha256": "", "phash": ""}
    try:
        raw = image_bytes(example["image"])
    except OSError as e:
        return dict(facts, drop=f"unreadable: {e}")
    facts["sha256"] = hashlib.sha256(raw).hexdigest()
    try:
        img = open_image(raw, max_pixels=max_pixels)
        facts["width"], facts["height"] = img.size  # header only: small images are dropped without decoding
        if min(img.size) < min_size:
            return dict(facts, drop=f"smaller than {min_size} px")
        img = load_image(img)
    except DataError as e:
        reason = "over the pixel limit" if "megapixel" in str(e) else f"unreadable: {e}"
        return dict(facts, drop=reason)
    facts["width"], facts["height"] = img.size
    facts["phash"] = str(imagehash.phash(img))
    return facts


def scrub(data, *, min_size=150, max_pixels=MAX_PIXELS, near_duplicate_distance=4, guard=None, num_proc=None):
    """Drop small, unreadable and over-large images, those the hidden-evaluation guard lists (`guard`: the path of
    holdout_guard.py, or None) and exact duplicates; group near duplicates.

    Returns the kept rows (with a `group` column: near-duplicate images share one) and a report dict.
    """
    facts = data.map(_inspect, fn_kwargs={"min_size": min_size, "max_pixels": max_pixels},
                     remove_columns=data.column_names, num_proc=num_proc, desc="Scrubbing")
    # Plain lists: indexing a `datasets` column row by row re-reads the column each time (minutes on a 60k pool).
    images, labels = list(data["image"]), list(data["label"])
    names = [image_name(image) for image in images]
    drops, digests, phashes = list(facts["drop"]), list(facts["sha256"]), list(facts["phash"])
    guard_report = {"script": guard, "checked": 0, "dropped": 0}
    if guard:
        readable = [i for i, reason in enumerate(drops) if not reason]
        listed, guard_report["checked"] = guard_listed([images[i] for i in readable], guard, processes=num_proc or 1)
        for i in listed:
            drops[readable[i]] = GUARD_REASON
        guard_report["dropped"] = len(listed)
    dropped = [(i, reason) for i, reason in enumerate(drops) if reason]

    # Exact duplicates: keep the first copy; an image labelled both ways is dropped altogether.
    by_hash = defaultdict(list)
    for i, (digest, reason) in enumerate(zip(digests, drops)):
        if not reason:
            by_hash[digest].append(i)
    exact_groups, keep = [], []
    for copies in by_hash.values():
        if len(copies) > 1:
            exact_groups.append([names[i] for i in copies])
            if len({labels[i] for i in copies}) > 1:
                dropped += [(i, "same image labelled both fake and real") for i in copies]
                continue
            dropped += [(i, "exact duplicate") for i in copies[1:]]
        keep.append(copies[0])
    keep.sort()

    groups = near_duplicate_groups([phashes[i] for i in keep], near_duplicate_distance)
    groups = identity_groups(groups, [names[i] for i in keep])
    kept = data.select(keep).add_column("group", groups).add_column("sha256", [digests[i] for i in keep])
    near_groups = defaultdict(list)
    for index, group in zip(keep, groups):
        near_groups[group].append(names[index])

    report = {
        "images_in": len(data),
        "images_kept": len(kept),
        "min_size": min_size,
        "near_duplicate_distance": near_duplicate_distance,
        "dropped_by_reason": dict(Counter(_reason_kind(reason) for _, reason in dropped)),
        "dropped": [{"file": names[i], "reason": reason} for i, reason in sorted(dropped)],
        "guard": guard_report,
        "exact_duplicate_groups": exact_groups,
        "near_duplicate_groups": [files for files in near_groups.values() if len(files) > 1],
        "kept_by_source": _counts(kept),
    }
    return kept, report


# ---------------------------------------------------------------------------------------------------------
# Faces


FACE_CACHE = os.path.join(os.path.expanduser(os.environ.get("DEEPFAKE_CACHE", "~/.cache/deepfake-detector")), "faces")
NO_FACE_POLICIES = ("drop", "whole")


def _largest_face(example):
    found = faces.detect_faces(load_image(image_bytes(example["image"])))
    return {"face_box": [] if found[0].whole_image else list(found[0].box), "faces_found": 0 if found[0].whole_image
            else len(found)}


FACE_CHUNK = 2000


def find_faces(data, *, no_face="drop", cache_dir=FACE_CACHE, num_proc=None):
    """Add each image's largest face box (`face_box`, [] for none), found by the app's own detector.

    Training, evaluation and the app then score the same pixels: `faces.crop_face(image, box)`, margin and all.
    Boxes are cached by image content (sha256) and detector settings, so the detector runs once per image
    however many runs follow. Images with no face are dropped (`no_face="drop"`: the product is a face
    detector, and in the shared data those are mostly diffusion fakes, a shortcut) or kept whole (`"whole"`,
    as the app scores an upload in which it finds no face). Returns the rows and a report of the counts.
    """
    cache_path = os.path.join(cache_dir, f"boxes-{faces.settings_key()}.json")
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    digests = list(data["sha256"])
    todo = sorted({d: i for i, d in enumerate(digests) if d not in cache}.values())
    for start in range(0, len(todo), FACE_CHUNK):  # saved a chunk at a time: a stopped run keeps what it found
        chunk = todo[start:start + FACE_CHUNK]
        found = data.select(chunk).map(_largest_face, remove_columns=data.column_names, num_proc=num_proc,
                                       desc=f"Finding faces ({start + len(chunk)} of {len(todo)})")
        for i, box, count in zip(chunk, found["face_box"], found["faces_found"]):
            cache[digests[i]] = {"box": box, "faces": count}
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_path + ".tmp", "w") as f:
            json.dump(cache, f)
        os.replace(cache_path + ".tmp", cache_path)
    boxes = [cache[d]["box"] for d in digests]
    without = defaultdict(lambda: {"fake": 0, "real": 0})
    for box, source, label in zip(boxes, data["source"], data["label"]):
        if not box:
            without[source][ID2LABEL[label]] += 1
    report = {
        "detector": faces.settings(), "no_face_policy": no_face,
        "images_without_face": sum(sum(c.values()) for c in without.values()),
        "without_face_by_source": {source: dict(c) for source, c in sorted(without.items())},
        "images_with_several_faces": sum(cache[d]["faces"] > 1 for d in digests),
    }
    data = data.add_column("face_box", boxes)
    if no_face == "drop":
        data = data.filter(lambda box: len(box) > 0, input_columns="face_box")
    return data, report


IDENTITIES = "identities.json"


def identity_groups(groups, paths):
    """Merge the split groups of images showing one person, where the source folder says who is who.

    A source built by `python -m train.sources` with an `identity` pattern has `<source>/identities.json`
    ({"<class>/<file>": identity}); its images of one identity get one group, so one person never lands in both
    train and test. Images of other sources keep their groups."""
    tables, first = {}, {}
    merged = list(groups)
    for i, path in enumerate(paths):
        if not path or path == "<bytes>":
            continue
        folder = os.path.dirname(os.path.dirname(path))
        if folder not in tables:
            table_path = os.path.join(folder, IDENTITIES)
            tables[folder] = json.load(open(table_path)) if os.path.isfile(table_path) else None
        table = tables[folder]
        identity = table and table.get(os.path.relpath(path, folder).replace(os.sep, "/"))
        if identity is None:
            continue
        merged[i] = first.setdefault((folder, identity), merged[i])
    # Near-duplicate groups that joined an identity bring their other members along.
    remap = {g: m for g, m in zip(groups, merged) if g != m}
    return [remap.get(g, m) for g, m in zip(groups, merged)]


def _reason_kind(reason):
    return reason.split(":")[0]


def near_duplicate_groups(phashes, max_distance):
    """Union images whose 64-bit perceptual hashes differ in at most `max_distance` bits; return a group id each."""
    n = len(phashes)
    hashes = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n - 1):
        distances = np.bitwise_count(hashes[i + 1:] ^ hashes[i])
        for j in np.nonzero(distances <= max_distance)[0] + i + 1:
            parent[find(int(j))] = find(i)
    return [find(i) for i in range(n)]


def _counts(data):
    counts = defaultdict(lambda: {"fake": 0, "real": 0})
    for source, label in zip(data["source"], data["label"]):
        counts[source][ID2LABEL[label]] += 1
    return {source: dict(c) for source, c in sorted(counts.items())}


def class_counts(data):
    counts = Counter(ID2LABEL[label] for label in data["label"])
    return {"fake": counts.get("fake", 0), "real": counts.get("real", 0)}


# ---------------------------------------------------------------------------------------------------------
# Split


def split(data, *, val_fraction=0.15, test_fraction=0.15, seed=0, max_eval=None):
    """Stratified (by source and label), group-aware split with a fixed seed.

    Near-duplicate groups stay inside one split, so nothing leaks from train to test. `max_eval` caps the
    validation and the test rows of each source and class: a 20k-image source then gives its extra images to
    training instead of 3k test images that measure no better than 500. Where every row carries
    its source's own split (train/validation/test folders), those are kept; a missing validation split is
    carved out of train.
    """
    own = set(data["split"])
    if own <= set(SPLITS) and "train" in own and "test" in own:
        parts = {name: data.filter(lambda s, n=name: s == n, input_columns="split") for name in SPLITS if name in own}
        if "validation" not in parts:
            carved = split(parts["train"].map(lambda _: {"split": ""}), val_fraction=val_fraction,
                           test_fraction=0.0, seed=seed, max_eval=max_eval)
            parts["train"], parts["validation"] = carved["train"], carved["validation"]
        result = datasets.DatasetDict({name: parts[name] for name in SPLITS})
    else:
        result = _group_split(data, val_fraction, test_fraction, seed, max_eval)
    for name in ("train", "validation"):
        if len(set(result[name]["label"])) < 2:
            raise DataError(f"The {name} split holds only one class: add images of both fake and real "
                            f"({class_counts(data)} found).")
    return result


def _group_split(data, val_fraction, test_fraction, seed, max_eval=None):
    if len(set(data["label"])) < 2:
        raise DataError(f"The data holds only one class ({class_counts(data)}): add images of both fake and real.")
    rng = random.Random(seed)
    members = defaultdict(list)
    for i, group in enumerate(data["group"]):
        members[group].append(i)
    sources, labels = list(data["source"]), list(data["label"])
    strata = defaultdict(list)  # (source, label of the group's first image) -> groups
    for group, rows in members.items():
        strata[(sources[rows[0]], labels[rows[0]])].append(group)
    assignment = {name: [] for name in SPLITS}
    for key in sorted(strata):
        groups = sorted(strata[key])
        rng.shuffle(groups)
        total = sum(len(members[g]) for g in groups)
        targets = {"test": round(total * test_fraction), "validation": round(total * val_fraction)}
        if max_eval is not None:
            targets = {name: min(target, max_eval) for name, target in targets.items()}
        filled = {"test": 0, "validation": 0}
        for group in groups:
            name = next((n for n in ("test", "validation") if filled[n] < targets[n]), "train")
            if name != "train":
                filled[name] += len(members[group])
            assignment[name] += members[group]
    return datasets.DatasetDict({name: data.select(sorted(rows)) for name, rows in assignment.items()})


def read_splits(folder):
    """A finished run's splits.json ({"counts", "rows": {split: {"file", "label", "source", ...}}})."""
    path = os.path.join(folder, "splits.json")
    if not os.path.isfile(path):
        raise DataError(f"{folder} has no splits.json: pass a folder written by python -m train.")
    with open(path) as f:
        return json.load(f)


def splits_from_run(folder, guard=None, processes=1, sources=None):
    """The splits a finished run trained and was tested on (its splits.json: files, labels, sources, face
    boxes) and its scrub report: to train another model on exactly the same rows, so test figures compare.
    With `guard` (the path of holdout_guard.py), the rows it lists are dropped: a run from before the scrub ran the
    guard may hold some. With `sources`, only those sources' rows are kept (before the guard runs), and the report
    names the run's other sources under "sources_left_out"."""
    saved = read_splits(folder)
    splits, counts, guard_report = {}, saved["counts"], {"script": guard, "checked": 0, "dropped": 0}
    had = {source for name in SPLITS for source in saved["rows"][name]["source"]}
    left_out = sorted(had - set(sources)) if sources is not None else []
    for name in SPLITS:
        rows = saved["rows"][name]
        if left_out:
            keep = [i for i, source in enumerate(rows["source"]) if source in sources]
            rows = {key: [values[i] for i in keep] for key, values in rows.items()}  # file, label, source, face_box
            counts = None
        missing = [p for p in rows["file"] if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{folder}/splits.json names {len(missing)} {name} images that are not here (first: "
                            f"{missing[0]}): run from the folder that run started in, with its --data present.")
        splits[name] = rows_dataset([{"path": p} for p in rows["file"]], rows["label"], rows["source"],
                                    rows.get("face_box"))
    if guard:  # one run of the guard over the three splits' rows, in order
        listed, guard_report["checked"] = guard_listed([i for n in SPLITS for i in splits[n]["image"]], guard,
                                                       processes)
        guard_report["dropped"] = len(listed)
        start = 0
        for name in SPLITS:
            end = start + len(splits[name])
            drop = {i - start for i in listed if start <= i < end}
            if drop:
                print(f"{folder} {name}: dropped {len(drop)} images the hidden-evaluation guard lists")
                splits[name] = splits[name].select(sorted(set(range(len(splits[name]))) - drop))
                counts = None
            start = end
    report_path = os.path.join(folder, "scrub_report.json")
    report = json.load(open(report_path)) if os.path.isfile(report_path) else {}
    report = {"images_in": report.get("images_in"), "images_kept": report.get("images_kept"),
              "dropped_by_reason": report.get("dropped_by_reason"), **report, "splits_from": folder,
              "sources_left_out": left_out}
    if guard:
        report["splits_from_guard"] = guard_report
    splits = datasets.DatasetDict(splits)
    return splits, report, counts or split_counts(splits)


def split_counts(splits):
    return {name: class_counts(part) for name, part in splits.items()}


# ---------------------------------------------------------------------------------------------------------
# Transforms


@dataclass
class Augment:
    """Training augmentations. The degradations are the study's "poor quality images" future work."""

    flip: bool = True
    crop_scale: float = 0.7  # smallest area fraction of a random crop
    jpeg: float = 0.3  # probability of a random JPEG re-compression, quality 30..95
    blur: float = 0.2  # probability of a Gaussian blur, radius 0.2..1.5
    downscale: float = 0.2  # probability of a downscale to 25..75 % and back
    self_blend: float = 0.0  # extra fakes per epoch, as a share of the real images: self-blended reals


def self_blend(img, rng):
    """A synthetic fake made from one real face (self-blended images, Shiohara & Yamasaki, CVPR 2022).

    A slightly altered copy of the face (colour, sharpness, a few pixels of scale and shift) is blended back
    into the face through a soft mask over the face, or over the eyes, nose or mouth alone. What is left to
    learn is what every face swap and Photoshop composite leaves behind: a blending boundary and mismatched
    statistics, not the fingerprint of one generator. The masks are placed for centred, upright faces (FFHQ,
    the CIPLab set, and the app's detected-face crops), so no landmark detector is needed.
    """
    w, h = img.size
    source = img
    if rng.random() < 0.5:  # colour: brightness, contrast, saturation, per-channel shift
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            source = enhance(source).enhance(rng.uniform(0.85, 1.15))
        shift = [rng.randint(-12, 12) for _ in range(3)]
        source = Image.merge("RGB", [band.point(lambda v, s=s: v + s) for band, s in zip(source.split(), shift)])
    if rng.random() < 0.5:  # texture: blur or sharpen
        source = source.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)) if rng.random() < 0.5
                               else ImageFilter.UnsharpMask(radius=2, percent=rng.randint(50, 150)))
    if rng.random() < 0.75:  # geometry: rescale by a few percent and shift, as a warped-in face would be
        scale = rng.uniform(0.94, 1.06)
        dx, dy = (rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h)
        source = source.transform((w, h), Image.AFFINE, (1 / scale, 0, dx, 0, 1 / scale, dy), Image.BILINEAR)

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.5, 0.6)
    region = rng.choice(("face", "face", "eyes", "nose", "mouth"))
    if region == "face":
        rx, ry = w * rng.uniform(0.22, 0.32), h * rng.uniform(0.28, 0.38)
        boxes = [(cx - rx, cy - ry, cx + rx, cy + ry)]
    elif region == "eyes":
        y, rx, ry = cy - h * rng.uniform(0.08, 0.14), w * rng.uniform(0.08, 0.12), h * rng.uniform(0.04, 0.07)
        gap = w * rng.uniform(0.08, 0.12)
        boxes = [(cx - gap - 2 * rx, y - ry, cx - gap, y + ry), (cx + gap, y - ry, cx + gap + 2 * rx, y + ry)]
        if rng.random() < 0.5:  # both eyes in one patch
            boxes = [(boxes[0][0], y - ry, boxes[1][2], y + ry)]
    elif region == "nose":
        rx, ry = w * rng.uniform(0.06, 0.1), h * rng.uniform(0.1, 0.15)
        boxes = [(cx - rx, cy - ry, cx + rx, cy + ry)]
    else:
        y, rx, ry = cy + h * rng.uniform(0.12, 0.18), w * rng.uniform(0.1, 0.15), h * rng.uniform(0.05, 0.08)
        boxes = [(cx - rx, y - ry, cx + rx, y + ry)]
    for box in boxes:
        draw.ellipse(box, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.01, 0.06) * w))
    strength = rng.choice((0.5, 0.75, 1.0, 1.0, 1.0))
    if strength < 1.0:
        mask = mask.point(lambda v: round(v * strength))
    return Image.composite(source, img, mask)


class ImageDataset(torch.utils.data.Dataset):
    """Rows of a scrubbed split as (pixel tensor, label) pairs.

    Training augmentations draw from a generator seeded by (seed, epoch, index), so an epoch gives the same
    images whatever the worker count, and a resumed run sees exactly what an uninterrupted one would.
    With `augment.self_blend`, indexes past the rows are extra fakes: self-blended copies of real rows, a
    different sample of them each epoch.
    """

    def __init__(self, rows, data_config, *, augment=None, reencode_quality=None, seed=0, degradation="clean",
                 balance_sources=0.0):
        self.rows = rows
        self.data_config = data_config
        self.augment = augment
        self.reencode_quality = reencode_quality
        self.seed = seed
        self.degradation = degradation
        self.epoch = 0
        self.eval_transform = eval_transform(data_config)
        self.normalize = self.eval_transform.transforms[-1]
        self.reals = np.flatnonzero(np.asarray(rows["label"]) == LABEL2ID["real"]) if augment else np.array([])
        self.extra = round(augment.self_blend * len(self.reals)) if augment else 0
        self.row_weights = source_weights(rows["source"], balance_sources) if balance_sources else None
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = epoch
        # Which reals this epoch's extra fakes are made from (the first `extra` of a seeded shuffle).
        self.blend_from = np.random.default_rng([self.seed, epoch]).permutation(self.reals)[:self.extra]
        # Loss weight of every index this epoch (None: all alike); an extra fake weighs as the real it came from.
        self.weights = None if self.row_weights is None else torch.cat(
            [self.row_weights, self.row_weights[torch.as_tensor(self.blend_from, dtype=torch.long)]])

    def __len__(self):
        return len(self.rows) + self.extra

    def __getitem__(self, index):
        """(pixels, label, index): the index lets evaluation put gathered predictions back in dataset order."""
        blended = index >= len(self.rows)
        if blended:
            row = dict(self.rows[int(self.blend_from[index - len(self.rows)])], label=LABEL2ID["fake"])
        else:
            row = self.rows[index]
        img = load_image(image_bytes(row["image"]))
        if self.reencode_quality:
            img = reencode_jpeg(img, self.reencode_quality)
        if row.get("face_box"):
            img = faces.crop_face(img, row["face_box"])
        img = degrade(img, self.degradation)
        if self.augment is None:
            return self.eval_transform(img), row["label"], index
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}")
        if blended:
            img = self_blend(img, rng)
        return self.normalize(augment_image(img, self.data_config, self.augment, rng)), row["label"], index


def source_weights(sources, power):
    """A loss weight per image, (images in its source)^-power, averaging 1: power 1 weighs every source alike."""
    counts = Counter(sources)
    weights = torch.tensor([counts[s] ** -power for s in sources], dtype=torch.float64)
    return (weights / weights.mean()).float()


def augment_image(img, data_config, augment, rng):
    """Degrade, crop, resize and flip one PIL image with `rng`; returns an unnormalised tensor."""
    from torchvision.transforms.functional import to_tensor

    if rng.random() < augment.jpeg:
        img = reencode_jpeg(img, rng.randint(30, 95))
    if rng.random() < augment.blur:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 1.5)))
    if rng.random() < augment.downscale:
        factor = rng.uniform(0.25, 0.75)
        small = img.resize((max(8, round(img.width * factor)), max(8, round(img.height * factor))), Image.BILINEAR)
        img = small.resize(img.size, Image.BILINEAR)
    # The crop covers the share of the image the model sees at evaluation (crop_pct of each side), shrunk by
    # up to crop_scale in area; at crop_pct 0.5 and crop_scale 1 a 256 px face is cropped, never resampled.
    # crop_scale 1 is a pure crop: no zoom and no stretch.
    area = img.width * img.height * data_config.get("crop_pct", 1.0) ** 2 * rng.uniform(augment.crop_scale, 1.0)
    ratio = rng.uniform(0.9, 1.1) if augment.crop_scale < 1 else 1.0
    w = min(img.width, round((area * ratio) ** 0.5))
    h = min(img.height, round((area / ratio) ** 0.5))
    left, top = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    size = data_config["input_size"][-1]
    box = (left, top, left + w, top + h)
    # PIL's resize at scale 1 still filters (off by one level here and there): crop when no resize is needed.
    img = img.crop(box) if (w, h) == (size, size) else img.resize((size, size), _interpolation(data_config), box=box)
    if augment.flip and rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return to_tensor(img)


def _interpolation(data_config):
    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}.get(data_config.get("interpolation"), Image.BILINEAR)


def eval_transform(data_config):
    """The evaluation transform, derived from a model's data config: the same one `pipeline()` applies."""
    from timm.data import create_transform

    return create_transform(
        input_size=tuple(data_config["input_size"]), interpolation=data_config["interpolation"],
        mean=tuple(data_config["mean"]), std=tuple(data_config["std"]), crop_pct=data_config["crop_pct"],
        crop_mode=data_config.get("crop_mode", "center"), is_training=False,
    )
