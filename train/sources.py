"""Build the training pool from public git repositories listed in a manifest (train/sources.toml).

    python -m train.sources --mirrors /work/.mirror --out /work/pool          # every source in the manifest
    python -m train.sources --only sdfd all-age-faces --max-per-source 200   # a few, capped (a quick look)
    python -m train.sources --clone --mirrors ~/repos                        # git clone what is missing
    python -m train.sources --docs docs/sources.md                           # the table of sources, licences

Each source names a repository, a commit and the paths under which its real and/or fake images lie (where one
folder holds both, a `labels` CSV in the repository gives each image's class). The images are read straight from git (`git ls-tree` at that commit, blobs through `git cat-file --batch`), so a bare mirror
is enough and no work tree is checked out. They are written as `<out>/<source>/{real,fake}/` keeping their bytes
(only a format training cannot read is re-encoded, to PNG); LFS pointers, unreadable files and images under
--min-size are counted and skipped. Then, per source, the hidden-evaluation guard (--guard, the project's
holdout_guard.py) runs over the folder and every image it lists is moved to `<out>/_guarded/`. Last, the pool is
deduplicated across sources in manifest order: an image whose bytes or perceptual hash match an image of an
earlier source (or of an --against folder, e.g. ../shared/data/*) is moved to `<out>/_duplicates/`.

`<out>/report.json` and the printed table give, per source and class: found, written, too small, guard-dropped,
duplicates dropped, kept, and the licence. `<out>/<source>/source.json` carries what the source is and its licence,
which training copies into the model card. A bad entry (missing repository, commit or path) prints one line
`train.sources: error: source 'NAME': ...` and the other sources still build; the exit code is 1 if any failed.
"""

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image

from deepfake_detector.images import MAX_PIXELS, DataError
from train.config import parse_args
from train.data import DEFAULT_GUARD, IDENTITIES, run_guard

PROG = "python -m train.sources"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MANIFEST = os.path.join(HERE, "sources.toml")
CLASSES = ("fake", "real")
# What the pool keeps as it is (what PIL, `datasets` and the guard all read); any other image format is re-encoded.
KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
# The generator families a fake source may name (the data report and the cards group by them).
FAMILIES = (
    "StyleGAN 1", "StyleGAN 2", "StyleGAN 3", "ProGAN", "other GAN", "SD 1.x", "SD 2.x", "SDXL", "SD 3",
    "other diffusion", "Midjourney", "DALL·E", "Flux", "Imagen", "Firefly", "face swap", "face reenactment",
    "face edit", "Photoshop composite", "mixed generators",
)
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
GUARDED, DUPLICATES = "_guarded", "_duplicates"


@dataclass
class SourcesArguments:
    manifest: str = field(default=DEFAULT_MANIFEST, metadata={"help": "The sources manifest (TOML)"})
    out: str = field(default="/work/pool", metadata={"help": "Folder the pool is built in: <out>/<source>/{real,fake}/"})
    mirrors: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "Folders holding git clones or bare mirrors (owner+name/, owner/name/, name/, "
                                    "with or without .git); searched in order"})
    clone: bool = field(default=False, metadata={
        "help": "git clone a repository found in no --mirrors folder (into the first one, else ~/.cache)"})
    only: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "Build only these sources (names from the manifest); the rest of the pool stays"})
    guard: str = field(default=DEFAULT_GUARD, metadata={
        "help": "The hidden-evaluation guard script (holdout_guard.py); 'none' skips it (never for a shipped model)"})
    against: list[str] = field(default_factory=list, metadata={
        "action": "extend", "help": "Image folders (e.g. ../shared/data/*) the pool is deduplicated against: their "
                                    "images win, copies in the pool are dropped"})
    max_per_source: int = field(default=0, metadata={
        "help": "At most this many images per source and class (a fixed sample; 0 = all, or the entry's own max)"})
    min_size: int = field(default=128, metadata={
        "help": "Skip images whose short side is under this many pixels (the training recipe's --min-size)"})
    near_duplicate_distance: int = field(default=4, metadata={
        "help": "Perceptual-hash bit distance under which two images of different sources are the same image"})
    docs: str = field(default="", metadata={
        "help": "Write the table of sources (with the counts of <out>/report.json where built) to this Markdown "
                "file and exit"})

    def __post_init__(self):
        if not os.path.isfile(self.manifest):
            raise DataError(f"no manifest at {self.manifest}: pass --manifest PATH (train/sources.toml).")
        if self.max_per_source < 0 or self.min_size < 0 or self.near_duplicate_distance < 0:
            raise DataError("--max-per-source, --min-size and --near-duplicate-distance take numbers of 0 or more.")
        if self.guard != "none" and not self.docs and not os.path.isfile(self.guard):
            raise DataError(f"no guard at {self.guard}: pass --guard PATH to holdout_guard.py (or --guard none for a "
                            "pool that never trains a shipped model).")
        for folder in self.against:
            if not os.path.isdir(folder):
                raise DataError(f"--against {folder} is not a folder: pass image folders (real/ and fake/ inside).")


class SourceError(Exception):
    """What is wrong with one manifest entry; that source is skipped and the others still build."""


# ---------------------------------------------------------------------------------------------------------
# The manifest


@dataclass
class Source:
    name: str
    repo: str
    commit: str
    licence: str
    fake: list[str] = field(default_factory=list)
    real: list[str] = field(default_factory=list)
    family: str = ""  # generator family of the fakes
    collection: str = ""  # where the reals come from
    resolution: str = ""
    what: str = ""
    url: str = ""
    exclude: list[str] = field(default_factory=list)
    max: int = 0  # at most this many images per class (0 = all)
    identity: str = ""  # a regex over the repository path whose first group names the person shown
    labels: dict = field(default_factory=dict)  # a CSV in the repository that names each image's class (LABEL_KEYS)
    notes: str = ""

    @property
    def clone_url(self):
        return self.url or f"https://github.com/{self.repo}.git"

    def facts(self):
        """What the source is, for `<out>/<source>/source.json`, the report and the model card."""
        return {"name": self.name, "repo": self.repo, "commit": self.commit, "url": self.url or f"https://github.com/{self.repo}",
                "classes": [c for c in CLASSES if getattr(self, c)], "family": self.family,
                "collection": self.collection, "resolution": self.resolution, "what": self.what,
                "license": self.licence}


def parse_source(entry, index):
    """One `[[source]]` table as a Source, or SourceError naming the entry and what to fix."""
    label = f"source '{entry.get('name')}'" if isinstance(entry.get("name"), str) else f"source #{index + 1}"
    known = {f.name for f in dataclasses.fields(Source)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SourceError(f"{label}: unknown keys {unknown} (the keys are {sorted(known)}).")
    missing = [key for key in ("name", "repo", "commit", "licence") if not entry.get(key)]
    if missing:
        raise SourceError(f"{label}: missing {', '.join(missing)}.")
    try:
        source = Source(**entry)
    except TypeError as e:
        raise SourceError(f"{label}: {e}.") from None
    if not NAME.match(source.name):
        raise SourceError(f"{label}: name must be lower-case letters, digits, '.', '-' or '_' (it names a folder).")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", source.repo):
        raise SourceError(f"{label}: repo must be owner/name as on GitHub, not {source.repo!r}.")
    if not re.fullmatch(r"[0-9a-f]{7,40}", source.commit):
        raise SourceError(f"{label}: commit must be a hex commit id (7 to 40 digits), not {source.commit!r}.")
    for key in ("fake", "real", "exclude"):
        value = getattr(source, key)
        if isinstance(value, str):
            setattr(source, key, [value])
        elif not all(isinstance(v, str) for v in value):
            raise SourceError(f"{label}: {key} must be a path or a list of paths.")
    if source.labels:
        _check_labels(source.labels, label)
    if not source.fake and not source.real:
        raise SourceError(f"{label}: give fake = [paths] and/or real = [paths]: where its images are in the repo.")
    if source.fake and source.family not in FAMILIES:
        raise SourceError(f"{label}: family {source.family!r} is not one of: {', '.join(FAMILIES)}.")
    if source.real and not source.collection:
        raise SourceError(f"{label}: real images need collection = \"...\" (where the photos come from).")
    if not isinstance(source.max, int) or source.max < 0:
        raise SourceError(f"{label}: max must be a whole number of images, 0 for all.")
    if source.identity:
        try:
            if re.compile(source.identity).groups < 1:
                raise re.error("it has no (group)")
        except re.error as e:
            raise SourceError(f"{label}: identity must be a regex with one (group) naming the person: {e}.") from None
    return source


# A `labels` table: the CSV file in the repository (csv), its column naming each image (file: matched to the image
# files under fake/real by name without suffix, so "abc.mp4" names faces/abc.jpg), the column holding the class
# (label) and its value for each class (fake, real); optionally a column (group) naming the image a row was made
# from (a face swap's original video): rows of one group, or a row and the one it names, stay in one split.
LABEL_KEYS = {"csv", "file", "label", "fake", "real", "group"}


def _check_labels(labels, label):
    if not isinstance(labels, dict):
        raise SourceError(f"{label}: labels must be a table {{csv = ..., file = ..., label = ..., fake = ..., real = ...}}.")
    unknown, missing = sorted(set(labels) - LABEL_KEYS), sorted(LABEL_KEYS - {"group"} - set(labels))
    if unknown or missing:
        raise SourceError(f"{label}: labels {'has unknown keys ' + str(unknown) if unknown else 'misses ' + str(missing)}"
                          f" (its keys are csv, file, label, fake, real and optionally group).")
    if not all(isinstance(v, str) and v for v in labels.values()):
        raise SourceError(f"{label}: every labels value must be a non-empty string.")


def read_labels(git_dir, commit, files, source):
    """{image name without suffix: (class, group)} from the source's labels CSV at `commit`."""
    spec = source.labels
    if spec["csv"] not in files:
        raise SourceError(f"labels csv '{spec['csv']}' is not in {source.repo} at {source.commit[:12]}: fix the path.")
    text = git(git_dir, "cat-file", "blob", files[spec["csv"]][0]).stdout.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    absent = [spec[k] for k in ("file", "label", "group") if k in spec and spec[k] not in (reader.fieldnames or [])]
    if absent:
        raise SourceError(f"labels csv '{spec['csv']}' has no column {absent[0]!r} (it has {reader.fieldnames}).")
    classes = {spec["fake"]: "fake", spec["real"]: "real"}
    table = {}
    for row in reader:
        label = classes.get(row[spec["label"]])
        if label is None:
            continue
        stem = os.path.splitext(os.path.basename(row[spec["file"]]))[0]
        origin = row.get(spec.get("group", ""), "") or ""
        table[stem] = (label, os.path.splitext(os.path.basename(origin))[0] or stem)
    return table


def load_manifest(path):
    """(sources, errors): the manifest's valid entries and one line per invalid one. Unreadable TOML is a DataError."""
    try:
        with open(path, "rb") as f:
            manifest = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path} is not valid TOML ({e}): fix the manifest.") from None
    entries = manifest.get("source", [])
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path} lists no sources: add [[source]] tables (see train/sources.toml).")
    sources, errors, seen = [], [], set()
    for index, entry in enumerate(entries):
        try:
            source = parse_source(entry, index)
            if source.name in seen:
                raise SourceError(f"source '{source.name}': the name is used twice in the manifest.")
            seen.add(source.name)
            sources.append(source)
        except SourceError as e:
            errors.append(str(e))
    return sources, errors


# ---------------------------------------------------------------------------------------------------------
# Reading images out of git


def git(git_dir, *args, check=True):
    result = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True)
    if check and result.returncode != 0:
        raise SourceError(result.stderr.decode(errors="replace").strip().splitlines()[-1] if result.stderr else
                          f"git {' '.join(args)} failed")
    return result


def _git_dir(path):
    """The git directory of a clone or bare mirror at `path`, or None."""
    if not os.path.isdir(path):
        return None
    result = subprocess.run(["git", "-C", path, "rev-parse", "--absolute-git-dir"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def mirror_candidates(folder, repo):
    owner, name = repo.split("/")
    for base in (f"{owner}+{name}", os.path.join(owner, name), name):
        for suffix in ("/repo", "/repo/.git", ".git", ""):
            yield os.path.join(folder, base + suffix)


def resolve_repo(source, mirrors, clone=False):
    """The git directory holding the source's repository: a --mirrors folder, or a fresh clone with --clone."""
    for folder in mirrors:
        for candidate in mirror_candidates(folder, source.repo):
            found = _git_dir(candidate)
            if found:
                return found
    if not clone:
        where = ", ".join(mirrors) or "no --mirrors folder given"
        raise SourceError(f"repository {source.repo} is not in {where}: fetch it there, or pass --clone.")
    into = os.path.join(mirrors[0] if mirrors else os.path.expanduser("~/.cache/deepfake-detector/repos"),
                        source.repo.replace("/", "+") + ".git")
    os.makedirs(os.path.dirname(into), exist_ok=True)
    result = subprocess.run(["git", "clone", "--bare", "--quiet", source.clone_url, into], capture_output=True, text=True)
    if result.returncode != 0:
        raise SourceError(f"git clone {source.clone_url} failed: {result.stderr.strip().splitlines()[-1:]}")
    return _git_dir(into)


def resolve_commit(git_dir, source):
    result = git(git_dir, "rev-parse", "--verify", "--quiet", f"{source.commit}^{{commit}}", check=False)
    if result.returncode != 0:
        raise SourceError(f"commit {source.commit} is not in {source.repo} ({git_dir}): fix the commit, or fetch "
                          "the repository again.")
    return result.stdout.decode().strip()


def list_files(git_dir, commit):
    """Every blob at a commit: {path: (object id, size)}."""
    out = git(git_dir, "ls-tree", "-r", "-l", "-z", "--full-tree", commit).stdout.decode("utf-8", errors="surrogateescape")
    files = {}
    for record in filter(None, out.split("\0")):
        meta, path = record.split("\t", 1)
        mode, kind, oid, size = meta.split()
        if kind == "blob":
            files[path] = (oid, int(size) if size.isdigit() else -1)  # "BAD": the clone lacks it (too large?)
    return files


def glob_regex(pattern):
    """A path glob as a regex: `*` and `?` stay inside one folder, `**` crosses folders; a glob that names a
    folder takes the files under it."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.rstrip("/"))
    return re.compile("".join({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(p, re.escape(p))
                              for p in parts) + r"(?:/.*)?\Z")


def _matches(path, spec):
    """A path is under a folder spec, or matches a glob spec."""
    if any(ch in spec for ch in "*?"):
        return bool(glob_regex(spec).match(path))
    spec = spec.strip("/")
    return path == spec or path.startswith(spec + "/")


def select_images(files, source, label, limit, table=None):
    """[(path, object id)] of the images under the source's paths for `label`, sampled to `limit` (0 = all); with
    a labels `table` (read_labels), only those it gives that class.

    The sample is fixed: files are ordered by a hash of source name and path, so a rerun, or a larger limit,
    picks the same images first."""
    chosen = set()
    for spec in getattr(source, label):
        hits = [p for p in files if _matches(p, spec)]
        if not hits:
            raise SourceError(f"path '{spec}' ({label}) holds no files in {source.repo} at {source.commit[:12]}: "
                              "fix the path.")
        chosen.update(hits)
    chosen = [p for p in chosen if p.lower().endswith(IMAGE_SUFFIXES)
              and not any(glob_regex(pattern).match(p) for pattern in source.exclude)]
    if table is not None:
        chosen = [p for p in chosen if table.get(_stem(p), ("",))[0] == label]
    chosen.sort(key=lambda p: hashlib.sha256(f"{source.name}:{p}".encode("utf-8", "surrogateescape")).hexdigest())
    if limit:
        chosen = chosen[:limit]
    return [(p, files[p][0]) for p in sorted(chosen)]


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


class BlobReader:
    """Blobs by object id through one `git cat-file --batch` process; None for an object the clone lacks."""

    def __init__(self, git_dir):
        self.process = subprocess.Popen(["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def read(self, oid):
        self.process.stdin.write(oid.encode() + b"\n")
        self.process.stdin.flush()
        header = self.process.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":  # "<oid> missing": a snapshot may lack large files
            return None
        data = self.process.stdout.read(int(header[2]))
        self.process.stdout.read(1)  # the newline after each object
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()
        self.process.wait()


def flat_name(path, used):
    """A file name for a repository path: its folders joined by '__', so files of different folders don't collide."""
    stem = path.replace("/", "__")
    name, n = stem, 1
    while name.lower() in used:
        n += 1
        base, ext = os.path.splitext(stem)
        name = f"{base}-{n}{ext}"
    used.add(name.lower())
    return name


def write_image(data, folder, name, min_size):
    """Write one blob as an image file; returns (what happened, file path or None).

    The bytes are kept as they are for JPEG/PNG/WebP/BMP (the suffix follows the real format); any other
    format is re-encoded once, losslessly, to PNG."""
    if data is None:
        return "missing blob", None
    if data.startswith(LFS_POINTER):
        return "LFS pointer", None
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, kind = img.size, img.format
            if size[0] * size[1] > MAX_PIXELS:
                return "over the pixel limit", None
            if min(size) < min_size:
                return "too small", None
            stem = os.path.splitext(name)[0]
            if kind in KEPT_FORMATS:
                img.verify()  # a truncated or corrupt file fails here, not in training
                path = os.path.join(folder, stem + KEPT_FORMATS[kind])
                with open(path, "wb") as f:
                    f.write(data)
                return "written", path
            img.seek(0)
            path = os.path.join(folder, stem + ".png")
            img.convert("RGBA" if "A" in img.getbands() else "RGB").save(path)
            return "re-encoded", path
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "unreadable", None


# ---------------------------------------------------------------------------------------------------------
# Building one source


def _move(path, root, into):
    target = os.path.join(into, os.path.relpath(path, root))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(path, target)


def build_source(source, args):
    """Materialise one source into `<out>/<name>/` (through `<name>.partial/`); returns its report entry."""
    started = time.time()
    git_dir = resolve_repo(source, args.mirrors, args.clone)
    commit = resolve_commit(git_dir, source)
    files = list_files(git_dir, commit)
    limit = min(filter(None, (args.max_per_source, source.max)), default=0)
    table = read_labels(git_dir, commit, files, source) if source.labels else None
    selected = {label: select_images(files, source, label, limit, table) for label in CLASSES if getattr(source, label)}

    final = os.path.join(args.out, source.name)
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts = {label: Counter() for label in selected}
    identities = {}
    pattern = re.compile(source.identity) if source.identity else None
    with BlobReader(git_dir) as blobs:
        for label, items in selected.items():
            folder = os.path.join(partial, label)
            os.makedirs(folder, exist_ok=True)
            used = set()
            for path, oid in items:
                counts[label]["found"] += 1
                outcome, written = write_image(blobs.read(oid), folder, flat_name(path, used), args.min_size)
                counts[label][outcome] += 1
                match = pattern.search(path) if pattern and written else None
                if match:
                    identities[f"{label}/{os.path.basename(written)}"] = match.group(1)
                elif written and table is not None and "group" in source.labels:
                    identities[f"{label}/{os.path.basename(written)}"] = table[_stem(path)][1]
    if identities:  # training keeps each person's images inside one split (train.data.identity_groups)
        with open(os.path.join(partial, IDENTITIES), "w") as f:
            json.dump(identities, f, indent=0, sort_keys=True)

    guarded_root = os.path.join(args.out, GUARDED, source.name)
    shutil.rmtree(guarded_root, ignore_errors=True)
    shutil.rmtree(os.path.join(args.out, DUPLICATES, source.name), ignore_errors=True)  # of the build replaced
    checked = None
    if args.guard != "none":
        try:
            listed, checked = run_guard(args.guard, [partial])
        except DataError as e:
            raise SourceError(str(e)) from None
        for path in listed:
            label = os.path.basename(os.path.dirname(path))
            counts[label]["guard dropped"] += 1
            _move(path, partial, guarded_root)
    with open(os.path.join(partial, "source.json"), "w") as f:
        json.dump({**source.facts(), "commit": commit}, f, indent=2)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return {**source.facts(), "commit": commit, "git_dir": git_dir, "guard": args.guard, "guard_checked": checked,
            "min_size": args.min_size, "limit": limit, "seconds": round(time.time() - started, 1),
            "identities": len(set(identities.values())),
            "classes": {label: dict(c) for label, c in counts.items()}}


# ---------------------------------------------------------------------------------------------------------
# Deduplicating the pool


def image_files(folder):
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                  if name.lower().endswith(tuple(KEPT_FORMATS.values()) + (".jpeg",)))


def fingerprint(path):
    """(sha256 of the bytes, 64-bit perceptual hash as int). JPEGs decode at reduced size: phash looks at 32 px."""
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (128, 128))
        value = int(str(imagehash.phash(img.convert("RGB"))), 16)
    return hashlib.sha256(data).hexdigest(), value


class HashCache:
    """Fingerprints kept in `<out>/.fingerprints.json`, keyed by path, size and mtime: a rerun hashes only what changed."""

    def __init__(self, path):
        self.path = path
        self.entries = {}
        if os.path.isfile(path):
            with open(path) as f:
                self.entries = json.load(f)

    def get(self, path):
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{int(stat.st_mtime)}"
        if key not in self.entries:
            try:
                digest, phash = fingerprint(path)
            except (OSError, ValueError, SyntaxError):
                return None
            self.entries[key] = [digest, f"{phash:016x}"]
        digest, phash = self.entries[key]
        return digest, int(phash, 16)

    def save(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.entries, f)
        os.replace(self.path + ".tmp", self.path)


def deduplicate(order, args, report):
    """Move images that repeat an image of an earlier source (or of an --against folder) to `<out>/_duplicates/`.

    Exact copies (same bytes) go wherever they are, also within one source; near duplicates (perceptual hash
    within --near-duplicate-distance bits) only across sources: within a source training keeps them in one split.
    Counts go into each source's report entry, with the sources duplicated."""
    cache = HashCache(os.path.join(args.out, ".fingerprints.json"))
    kept_hashes = np.zeros(0, dtype=np.uint64)
    kept_owner = []  # which source each kept hash belongs to
    digests = {}
    for folder in args.against:
        name = f"against:{os.path.basename(os.path.normpath(folder))}"
        hashes = [h for h in (cache.get(p) for p in image_files(folder)) if h]
        for digest, _ in hashes:
            digests.setdefault(digest, name)
        kept_hashes = np.concatenate([kept_hashes, np.array([h for _, h in hashes], dtype=np.uint64)])
        kept_owner += [name] * len(hashes)
    for name in order:
        folder = os.path.join(args.out, name)
        if not os.path.isdir(folder):
            continue
        entry = report["sources"].setdefault(name, {"classes": {}})
        dup_root = os.path.join(args.out, DUPLICATES, name)
        for path in image_files(dup_root):  # every run decides afresh: an earlier run's duplicates go back first
            _move(path, dup_root, folder)
        shutil.rmtree(dup_root, ignore_errors=True)
        for counts in entry["classes"].values():
            counts.pop("duplicates dropped", None)
        new_hashes, overlaps = [], Counter()
        owners = np.array(kept_owner, dtype=object)
        for path in image_files(folder):
            label = os.path.basename(os.path.dirname(path))
            fp = cache.get(path)
            if fp is None:
                continue
            digest, phash = fp
            twin = digests.get(digest)
            if twin is None and len(kept_hashes) and args.near_duplicate_distance >= 0:
                distances = np.bitwise_count(kept_hashes ^ np.uint64(phash))
                close = np.flatnonzero(distances <= args.near_duplicate_distance)
                twin = owners[close[0]] if len(close) else None
            if twin is not None:
                counts = entry["classes"].setdefault(label, {})
                counts["duplicates dropped"] = counts.get("duplicates dropped", 0) + 1
                overlaps[twin] += 1
                _move(path, folder, dup_root)
                continue
            digests[digest] = name
            new_hashes.append(phash)
        kept_hashes = np.concatenate([kept_hashes, np.array(new_hashes, dtype=np.uint64)])
        kept_owner += [name] * len(new_hashes)
        entry["duplicates_of"] = dict(overlaps.most_common())
        for label in CLASSES:
            if label in entry["classes"] and os.path.isdir(os.path.join(folder, label)):
                entry["classes"][label]["kept"] = len(image_files(os.path.join(folder, label)))
    cache.save()


# ---------------------------------------------------------------------------------------------------------
# Report


COLUMNS = ("found", "written", "re-encoded", "too small", "unreadable", "LFS pointer", "missing blob",
           "guard dropped", "duplicates dropped", "kept")


def totals(report):
    total = Counter()
    for entry in report["sources"].values():
        for counts in entry.get("classes", {}).values():
            total.update({k: v for k, v in counts.items() if isinstance(v, int)})
    families, collections = Counter(), Counter()  # images kept, so a family the guard emptied does not count
    for entry in report["sources"].values():
        for label, key, tally in (("fake", "family", families), ("real", "collection", collections)):
            kept = entry.get("classes", {}).get(label, {}).get("kept", 0)
            if kept and entry.get(key):
                tally[entry[key]] += kept
    return {"images": dict(total), "sources": sum(any(c.get("kept") for c in e.get("classes", {}).values())
                                                  for e in report["sources"].values()),
            "families": dict(families.most_common()), "collections": dict(collections.most_common()),
            "guard_checked": sum(e.get("guard_checked") or 0 for e in report["sources"].values())}


def table(report):
    header = ["source", "class", "family / collection", *COLUMNS, "licence"]
    rows = []
    for name, entry in report["sources"].items():
        for label, counts in sorted(entry.get("classes", {}).items()):
            what = entry.get("family") if label == "fake" else entry.get("collection")
            rows.append([name, label, what or "", *(str(counts.get(c, 0)) for c in COLUMNS), entry.get("license", "")])
    return header, rows


def print_table(report, stream=None):
    stream = stream or sys.stdout
    header, rows = table(report)
    short = [row[:-1] + [row[-1][:40]] for row in rows]
    widths = [max(len(str(r[i])) for r in [header] + short) for i in range(len(header))]
    for row in [header] + short:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip(), file=stream)
    t = report["totals"]
    print(f"\n{t['sources']} sources with images kept, {t['images'].get('kept', 0)} images kept of "
          f"{t['images'].get('found', 0)} found; "
          f"guard: {t['guard_checked']} checked, {t['images'].get('guard dropped', 0)} dropped; "
          f"{t['images'].get('duplicates dropped', 0)} duplicates dropped; {len(t['families'])} generator families, "
          f"{len(t['collections'])} real collections.", file=stream)


def docs_markdown(sources, report):
    """The table of sources for docs/sources.md: what each is, where, its licence, and the counts where built."""
    built = report.get("sources", {}) if report else {}
    lines = ["# Training sources", "",
             "Generated by `python -m train.sources --docs docs/sources.md` from `train/sources.toml`"
             + (" and the pool's report.json" if built else "") + ". Rebuild the pool with "
             "`python -m train.sources --clone --mirrors DIR --out POOL` (see the README).", "",
             "| source | class | family / collection | resolution | repository @ commit | images kept | licence |",
             "|---|---|---|---|---|---|---|"]
    for source in sources:
        for label in CLASSES:
            if not getattr(source, label):
                continue
            counts = built.get(source.name, {}).get("classes", {}).get(label, {})
            kept = counts.get("kept", "–")
            what = source.family if label == "fake" else source.collection
            url = source.url or f"https://github.com/{source.repo}"
            lines.append(f"| `{source.name}` | {label} | {what} | {source.resolution} | [{source.repo}]({url}) @ "
                         f"`{source.commit[:10]}` | {kept} | {source.licence} |")
    if built:
        t = totals({"sources": {s.name: built[s.name] for s in sources if s.name in built}})
        lines += ["", f"{t['images'].get('kept', 0)} images kept from {t['sources']} sources; the hidden-evaluation "
                      f"guard checked {t['guard_checked']} and dropped {t['images'].get('guard dropped', 0)}; "
                      f"{t['images'].get('duplicates dropped', 0)} duplicates dropped.", "",
                      "Fakes kept by generator family: " + ", ".join(f"{k} {v}" for k, v in t["families"].items())
                      + ".", "", "Reals kept by collection: " + ", ".join(f"{k} {v}" for k, v in t["collections"].items())
                      + "."]
    return "\n".join(lines) + "\n"


def load_report(out):
    path = os.path.join(out, "report.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"sources": {}}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_args(argv, classes=(SourcesArguments,), prog=PROG, description=__doc__)
    prefix = f"{PROG.split()[-1]}: error:"
    try:
        sources, errors = load_manifest(args.manifest)
    except DataError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return 2
    if args.docs:
        with open(args.docs, "w") as f:
            f.write(docs_markdown(sources, load_report(args.out)))
        print(f"sources: wrote {args.docs} ({len(sources)} sources)")
        return 0
    names = [s.name for s in sources]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        print(f"{prefix} --only names {unknown}, not in {args.manifest} (its sources: {', '.join(names)}).", file=sys.stderr)
        return 2
    for line in errors:
        print(f"{prefix} {line}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    stale = sorted(n for n in os.listdir(args.out) if n not in names and os.path.isfile(os.path.join(args.out, n, "source.json")))
    for name in stale:  # left in place (it is the user's data), but said loudly: --pool would still read it
        print(f"sources: warning: {os.path.join(args.out, name)} is not in {args.manifest} any more: delete it, or "
              "it stays in the pool.", file=sys.stderr)
    report = load_report(args.out)
    report["sources"] = {n: e for n, e in report["sources"].items() if n in names}  # entries removed from the manifest
    failed = {}
    for source in sources:
        if args.only and source.name not in args.only:
            continue
        print(f"sources: building {source.name} ({source.repo} @ {source.commit[:12]})", file=sys.stderr)
        try:
            report["sources"][source.name] = build_source(source, args)
        except SourceError as e:
            failed[source.name] = str(e)
            print(f"{prefix} source '{source.name}': {e}", file=sys.stderr)
    print("sources: deduplicating the pool", file=sys.stderr)
    report["sources"] = {n: report["sources"][n] for n in names if n in report["sources"]}
    deduplicate([n for n in names if n in report["sources"]], args, report)
    report.update(manifest=os.path.abspath(args.manifest), against=args.against,
                  near_duplicate_distance=args.near_duplicate_distance, errors=errors + [
                      f"source '{n}': {e}" for n, e in failed.items()])
    report["totals"] = totals(report)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print_table(report)
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
