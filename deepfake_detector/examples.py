"""The app's examples: held-out test images of one model, each with its truth and source, and a short clip.

    python -m deepfake_detector.examples --model models/ensemble      # rewrites examples/ and its manifest
    read_manifest()                                                   # what the app shows: [Example, ...], clip

Each example is picked from the model folder's `splits.json` test rows (never a training or validation image)
by kind: a StyleGAN2 face, a diffusion portrait, a face swap, a Photoshop composite, two real photos and a
photo with several faces. When the model's splits do not include a kind's data set at all, the image comes from
that set's folder (`--data`, ../shared/data by default) and its caption says the model never saw that set;
when a set is in the splits, only its test rows are used. Picks are seeded and made without looking at any
score. The clip is made from test images too: real faces, then fake faces, half a second each.

The files are copied byte for byte (no re-encoding) into examples/, and examples/examples.json records each
one's truth, source, original path and split, plus the caption the app shows. Files the previous manifest
listed are removed first, so rerunning the script after a retrain replaces the examples cleanly.
"""

import argparse
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
MANIFEST = "examples.json"
CLIP_NAME = "clip-real-then-fake.mp4"
CLIP_FACES, CLIP_SECONDS_PER_FACE, CLIP_FPS, CLIP_SIDE = 4, 0.5, 10, 256

# (file stem, data set, truth, what it is, what detect_faces must find: at least this many faces)
KINDS = (
    ("fake-stylegan2", "stylegan2-thumbs", "fake", "StyleGAN2 face (thispersondoesnotexist.com)", 1),
    ("fake-diffusion", "sd-people", "fake", "Stable Diffusion portrait", 1),
    ("fake-face-swap", "lfw-faceswap", "fake", "face swap pasted into a news photo (LFW)", 1),
    ("fake-photoshop", "ciplab", "fake", "Photoshop composite by an expert (CIPLab)", 1),
    ("real-flickr", "faces140k", "real", "photo from Flickr (FFHQ)", 1),
    ("real-studio", "ciplab", "real", "portrait photo (CIPLab set)", 1),
    ("real-group", "lfw-faceswap", "real", "news photo with more than one face (LFW)", 2),
)
# Kept when the script rewrites examples/: drawn by code, not data (see examples/README.md).
NO_FACE = {"file": "no-face-landscape.jpg", "truth": "no face", "source": "drawn by code for this project",
           "split": "not data", "caption": "No face: a landscape drawn by code (shows the whole-image fallback)"}
LABELS = {0: "fake", 1: "real"}


@dataclass(frozen=True)
class Example:
    path: str  # absolute path of the example file
    caption: str  # what the app shows beside it: truth, what it is, source and split
    truth: str  # "fake", "real" or "no face"


def read_manifest(folder=EXAMPLES_DIR):
    """([Example, ...] images, Example or None for the clip) from examples/examples.json; ([], None) without it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return [], None
    with open(path) as f:
        manifest = json.load(f)
    images = [Example(str(Path(folder) / e["file"]), e["caption"], e["truth"]) for e in manifest.get("images", [])
              if (Path(folder) / e["file"]).is_file()]
    clip = manifest.get("clip")
    clip = Example(str(Path(folder) / clip["file"]), clip["caption"], "real, then fake") \
        if clip and (Path(folder) / clip["file"]).is_file() else None
    return images, clip


# ---------------------------------------------------------------------------------------------------------
# Picking


def read_splits(model_folder):
    """{split: [(path, truth, source)]} from a model folder's splits.json, paths resolved like training did
    (relative to the repository root)."""
    with open(Path(model_folder) / "splits.json") as f:
        rows = json.load(f)["rows"]
    return {split: [(str((ROOT / file).resolve()), LABELS[label], source)
                    for file, label, source in zip(r["file"], r["label"], r["source"])] for split, r in rows.items()}


def candidates(splits, data_root, source, truth, seed):
    """(paths in a seeded order, split note): the test rows of `source`/`truth`, or, when the model's splits
    never name `source`, every file of that set's folder."""
    rng = random.Random(f"{seed}-{source}-{truth}")
    named = {s for rows in splits.values() for _, _, s in rows}
    if source in named:
        paths = sorted(p for p, t, s in splits.get("test", []) if s == source and t == truth)
        note = "held-out test image of this model"
    else:
        folder = Path(data_root) / source / truth
        paths = sorted(str(p.resolve()) for p in folder.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        note = f"not seen in training (this model was not trained on {source})"
    rng.shuffle(paths)
    return paths, note


def pick(splits, data_root, seed, count_faces, tries=300):
    """[(stem, path, truth, source, description, note)] for KINDS: per kind the first candidate in seeded order
    with enough faces found (and not already used)."""
    picked, used = [], set()
    for stem, source, truth, description, min_faces in KINDS:
        paths, note = candidates(splits, data_root, source, truth, seed)
        chosen = next((p for p in paths[:tries] if p not in used and count_faces(p) >= min_faces), None)
        if chosen is None:
            print(f"skipped {stem}: no {truth} image of {source} with {min_faces}+ faces among {len(paths)} candidates")
            continue
        used.add(chosen)
        picked.append((stem, chosen, truth, source, description, note))
    return picked


def _count_faces(path):
    from deepfake_detector.faces import detect_faces
    from deepfake_detector.images import load_image

    faces = detect_faces(load_image(path))
    if faces[0].whole_image:
        return 0
    # Faces at least half as tall as the largest: a group, not one face and a speck in the background.
    heights = [f.box[3] - f.box[1] for f in faces]
    return sum(h >= 0.5 * heights[0] for h in heights)


# ---------------------------------------------------------------------------------------------------------
# Writing


def write_clip(paths, out, side=CLIP_SIDE, fps=CLIP_FPS, seconds_per_image=CLIP_SECONDS_PER_FACE):
    """An H.264 MP4 showing each image (scaled to side x side) for `seconds_per_image`, in order."""
    import av
    from PIL import Image

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"  # what browsers play
        stream.options = {"crf": "20", "preset": "medium"}
        for path in paths:
            with Image.open(path) as img:
                frame = av.VideoFrame.from_image(img.convert("RGB").resize((side, side), Image.BICUBIC))
            for _ in range(round(fps * seconds_per_image)):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(out)


def caption(truth, description, source, note):
    return f"{truth.upper()} · {description} · {source}, {note}"


def make_examples(model_folder, data_root, out=EXAMPLES_DIR, seed=0, count_faces=_count_faces):
    """Pick, copy and caption the examples for `model_folder`; write the clip and the manifest. -> manifest."""
    out = Path(out)
    splits = read_splits(model_folder)
    old = out / MANIFEST
    if old.is_file():
        with open(old) as f:
            previous = json.load(f)
        for entry in previous.get("images", []) + [previous.get("clip") or {}]:
            if entry.get("file") and entry["file"] != NO_FACE["file"]:
                (out / entry["file"]).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for stem, path, truth, source, description, note in pick(splits, data_root, seed, count_faces):
        name = stem + Path(path).suffix.lower()
        shutil.copyfile(path, out / name)
        images.append({"file": name, "truth": truth, "source": source, "original": _relative(path),
                       "split": "test" if note.startswith("held-out") else "not in the model's splits",
                       "caption": caption(truth, description, source, note)})
    if (out / NO_FACE["file"]).is_file():
        images.append(dict(NO_FACE))
    real, _ = candidates(splits, data_root, "faces140k", "real", seed + 1)
    fake, _ = candidates(splits, data_root, "faces140k", "fake", seed + 1)
    used = {e.get("original") for e in images}
    real = [p for p in real if _relative(p) not in used][:CLIP_FACES]
    fake = [p for p in fake if _relative(p) not in used][:CLIP_FACES]
    clip = None
    if len(real) == len(fake) == CLIP_FACES:
        write_clip(real + fake, out / CLIP_NAME)
        seconds = CLIP_FACES * CLIP_SECONDS_PER_FACE
        clip = {"file": CLIP_NAME, "frames_from": [_relative(p) for p in real + fake],
                "caption": f"REAL for {seconds:g} s, then FAKE for {seconds:g} s · a clip made from {CLIP_FACES} real "
                           f"and {CLIP_FACES} StyleGAN held-out test faces of faces140k, {CLIP_SECONDS_PER_FACE:g} s "
                           "each (not a filmed video)"}
    manifest = {"made_by": f"python -m deepfake_detector.examples --model {_relative(model_folder)} --seed {seed}",
                "model": _relative(model_folder), "seed": seed,
                "how": "picked at random (seeded) among the model's test rows, without looking at any score",
                "images": images, "clip": clip}
    with open(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _relative(path):
    """A path as splits.json writes it: relative to the repository root (../shared/... for the shared data)."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deepfake_detector.examples", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder whose splits.json says which images are test")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                        help="folder holding the data sets, for sets the model's splits do not include")
    parser.add_argument("--out", default=str(EXAMPLES_DIR), help="where the examples and examples.json go")
    parser.add_argument("--seed", type=int, default=0, help="which random picks (same seed, same examples)")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "splits.json").is_file():
        parser.error(f"{args.model} has no splits.json: pass a model folder written by python -m train.")
    manifest = make_examples(args.model, args.data, args.out, args.seed)
    for entry in manifest["images"] + ([manifest["clip"]] if manifest["clip"] else []):
        print(f"{entry['file']:<28} {entry['caption']}")


if __name__ == "__main__":
    main()
