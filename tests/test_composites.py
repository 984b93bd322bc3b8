"""Part composites (train/composites.py): the parts land where the landmarks say, nothing outside them changes, only a
run's train reals are used, and bad arguments get one clear line."""

import csv
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import faces
from train import composites

# A 200 x 200 face: eyes at y 80, nose tip at (100, 110), mouth corners at y 140.
POINTS = ((70.0, 80.0), (130.0, 80.0), (100.0, 110.0), (78.0, 140.0), (122.0, 140.0))


def photo(seed, size=200):
    """A smooth random image (every pixel differs from another seed's)."""
    rng = np.random.RandomState(seed)
    coarse = rng.rand(size // 20, size // 20, 3) * 200 + 20
    return np.kron(coarse, np.ones((20, 20, 1))).astype(np.uint8)


def face(seed, points=POINTS, path=None):
    pixels = photo(seed)
    points = np.array(points, np.float32)
    return composites.Face(path or f"face{seed}.jpg", pixels, points, composites.face_colour(pixels, points))


@pytest.mark.parametrize("poisson", [0.0, 1.0])
@pytest.mark.parametrize("code", ["1000", "0010", "0001", "1111"])
def test_a_composite_changes_the_chosen_parts_and_nothing_far_from_them(code, poisson):
    target, donor = face(0), face(1)
    parts = [part for part, bit in zip(composites.PARTS, code) if bit == "1"]
    out, blend = composites.composite(target, donor, parts, random.Random(0), poisson=poisson)
    assert blend == ("poisson" if poisson else "colour-matched")
    assert out.shape == target.image.shape and out.dtype == np.uint8
    changed = np.abs(out.astype(int) - target.image).max(axis=2) > 8
    assert changed[:20].sum() == 0 and changed[-20:].sum() == 0  # far above the brows, below the chin: untouched
    where = {"left_eye": (80, 70), "right_eye": (80, 130), "nose": (100, 100), "mouth": (140, 100)}
    for part, (y, x) in where.items():
        near = changed[y - 6:y + 7, x - 6:x + 7].mean()
        if part in parts:
            assert near > 0.5, f"{part} was to be pasted"
        elif code != "1111":  # a pasted part's feathered edge may reach the next part's centre only with all four
            assert near < 0.5, f"{part} was not to be pasted"


def test_the_donor_is_aligned_by_the_landmarks_before_pasting():
    # The donor's face is the target's moved 10 px right: once aligned, a donor that IS the target pastes nothing new.
    target = face(0)
    shifted = np.roll(target.image, 10, axis=1)
    moved = np.array(POINTS, np.float32) + [10, 0]
    donor = composites.Face("donor.jpg", shifted, moved, composites.face_colour(shifted, moved))
    out, _ = composites.composite(target, donor, ["nose"], random.Random(0), poisson=0.0)
    assert np.abs(out.astype(int) - target.image)[60:160, 40:160].max() <= 4  # Lab round trip: a few levels
    unaligned = composites.Face("donor.jpg", shifted, target.points, target.colour)  # landmarks that lie
    out, _ = composites.composite(target, unaligned, ["nose"], random.Random(0), poisson=0.0)
    assert np.abs(out.astype(int) - target.image)[60:160, 40:160].max() > 40


def test_the_donor_picked_fits_the_target_in_colour_and_pose():
    target = face(0)
    tilted = np.array(POINTS, np.float32)
    tilted[2] += [25, 0]  # the nose far off the eyes' midline: a turned head
    same_pose, turned = face(0, path="same-pose.jpg"), face(0, points=tilted, path="turned.jpg")
    assert composites.pick_donor(target, [target, same_pose, turned], random.Random(0), 8).path == "same-pose.jpg"


def make_run(tmp_path):
    """A run folder whose splits.json names real and fake files of two sources in three splits."""
    rows, seed = {}, 0
    for split in ("train", "validation", "test"):
        files, labels, sources = [], [], []
        for source in ("portraits", "other"):
            for label in (0, 1):
                for i in range(3):
                    path = tmp_path / "data" / source / split / f"{label}_{i}.jpg"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(photo(seed)).save(path)
                    seed += 1
                    files.append(str(path))
                    labels.append(label)
                    sources.append(source)
        rows[split] = {"file": files, "label": labels, "source": sources}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "splits.json").write_text(json.dumps({"rows": rows}))
    return str(tmp_path / "run")


def test_composites_are_made_from_the_run_s_train_reals_only(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setattr(composites, "detect_faces",
                        lambda image: [faces.Face((50, 50, 150, 170), 0.99, keypoints=POINTS)])
    out = str(tmp_path / "composites")
    composites.main(["--splits-from", run, "--sources", "portraits", "--per-image", "2", "--out", out])
    reals, fakes = sorted(os.listdir(os.path.join(out, "real"))), sorted(os.listdir(os.path.join(out, "fake")))
    assert len(reals) == 3 and len(fakes) == 6
    with open(os.path.join(out, "manifest.csv")) as f:
        manifest = list(csv.DictReader(f))
    assert sorted(row["file"] for row in manifest) == [f"fake/{name}" for name in fakes]
    used = {row["target"] for row in manifest} | {row["donor"] for row in manifest}
    assert all(os.sep.join(("portraits", "train", "1_")) in path for path in used)  # train reals of the source only
    assert all(row["target"] != row["donor"] for row in manifest)
    assert all(name.rsplit("_", 1)[1][:4] in composites.CIPLAB_MIX for name in fakes)
    facts = json.load(open(os.path.join(out, "source.json")))
    assert facts["family"] == "Photoshop composite" and facts["fakes"] == 6 and facts["reals"] == 3
    assert "licence" in facts["license"] or "licences" in facts["license"]
    # the reals are the targets re-encoded alike, so within a pair only the edit differs
    target = np.asarray(Image.open(manifest[0]["target"]).convert("RGB"), dtype=int)
    real = np.asarray(Image.open(os.path.join(out, "real", reals[0])).convert("RGB"), dtype=int)
    assert np.abs(real - target).mean() < 3


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/new"], "Pass either --splits-from RUN"),
    (["--splits-from", "{run}", "--reals", "{tmp}", "--out", "{tmp}/new"], "Pass either --splits-from RUN"),
    (["--splits-from", "{run}", "--sources", "nope", "--out", "{tmp}/new"], "has no source 'nope'"),
    (["--splits-from", "{run}", "--out", "{run}"], "already exists"),
    (["--reals", "{tmp}/missing", "--out", "{tmp}/new"], "is not a folder"),
    (["--splits-from", "{run}", "--per-image", "0", "--out", "{tmp}/new"], "--per-image takes 1 or more"),
])
def test_bad_arguments_get_one_clear_line(tmp_path, argv, message, capsys):
    run = make_run(tmp_path)
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        try:
            composites.main(argv)
        except composites.DataError as e:  # raised after parsing: the command line prints it as one line
            raise SystemExit(f"error: {e}")
    printed = capsys.readouterr().err + str(exit_info.value.code)
    assert message in printed
    assert not os.path.exists(os.path.join(tmp_path, "new"))
