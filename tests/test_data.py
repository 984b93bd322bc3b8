"""Loading, scrubbing and splitting: every odd image a user can bring, and no leak from train to test."""

import io
import json
import os
import shutil
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from deepfake_detector.images import ID2LABEL, DataError, load_image, to_rgb
from tests.helpers import HIDDEN_COLOUR, face_like, make_image_folder, write_guard
from train.config import parse_args
from train.data import (
    GUARD_REASON,
    class_counts,
    groups_of,
    image_bytes,
    load_sources,
    near_duplicate_groups,
    resolve_guard,
    scrub,
    split,
    splits_from_run,
)
from train.loop import prepare_data


def _save(img, path, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kwargs)
    return path


# ---------------------------------------------------------------------------------------------------------
# load_image: one clear sentence for every bad input, RGB for every good one


def test_empty_bytes_are_refused():
    with pytest.raises(DataError, match=r"^The file is empty \(0 bytes\): upload an image file such as JPEG or PNG\.$"):
        load_image(b"")


def test_non_image_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image")
    with pytest.raises(DataError, match=r"^notes\.jpg is not an image this app can read: upload a JPEG, PNG"):
        load_image(str(path))


def test_truncated_jpeg_is_refused(tmp_path):
    buffer = io.BytesIO()
    face_like(np.random.RandomState(0)).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=r"^cut\.jpg is corrupt or truncated .*: re-export or re-download it\.$"):
        load_image(str(path))


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # A 1-bit 11000x10000 PNG: 110 megapixels, a few kB on disk.
    path = _save(Image.new("1", (11000, 10000)), str(tmp_path / "bomb.png"))
    assert os.path.getsize(path) < 100_000
    with pytest.raises(DataError, match=r"^bomb\.png is 11000x10000 \(110 megapixels\), over the 100-megapixel limit"):
        load_image(path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1"])
def test_every_mode_becomes_rgb(mode):
    img = face_like(np.random.RandomState(0), 80).convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (80, 80)


def test_transparent_areas_become_white():
    img = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    values = np.full((40, 40), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    path = _save(Image.fromarray(values), str(tmp_path / "grey16.png"))
    assert Image.open(path).mode.startswith("I")
    assert load_image(path).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(img, str(tmp_path / "rotated.jpg"), exif=exif)
    assert load_image(path).size == (30, 60)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:])
    red, green, blue = load_image(path).getpixel((5, 5))
    assert red > 200 and blue < 50


# ---------------------------------------------------------------------------------------------------------
# Sources and scrub


def test_labels_are_fixed_by_name_not_folder_order(tmp_path):
    root = tmp_path / "data"
    rng = np.random.RandomState(0)
    _save(face_like(rng), str(root / "Real" / "a.jpg"))
    _save(face_like(rng, fake=True), str(root / "FAKE" / "b.jpg"))
    data = load_sources([str(root)])
    by_file = {os.path.basename(image["path"]): ID2LABEL[label] for image, label in zip(data["image"], data["label"])}
    assert by_file == {"a.jpg": "real", "b.jpg": "fake"}


def test_unknown_class_is_a_clear_error(tmp_path):
    rng = np.random.RandomState(0)
    for label in ("real", "fake", "cartoon"):
        _save(face_like(rng), str(tmp_path / label / "x.jpg"))
    with pytest.raises(DataError, match=r"has classes \['cartoon'\] besides fake/real"):
        load_sources([str(tmp_path)])


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist: pass an image folder"):
        load_sources([str(tmp_path / "nowhere")])


@pytest.fixture
def messy_folder(tmp_path):
    """Good images plus one of each problem the scrub handles."""
    root = tmp_path / "messy"
    make_image_folder(str(root), per_class=6)
    rng = np.random.RandomState(1)
    _save(face_like(rng, 100), str(root / "real" / "small.jpg"))  # under 150 px
    (root / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(root / "real" / "real_000.jpg", root / "real" / "real_000_copy.jpg")  # exact duplicate
    near = Image.open(root / "fake" / "fake_000.jpg").convert("RGB")
    near.save(root / "fake" / "near_000.jpg", quality=60)  # same picture, other encoding
    _save(face_like(rng, 160).convert("CMYK"), str(root / "real" / "cmyk.jpg"))
    _save(face_like(rng, 160).convert("L"), str(root / "real" / "grey.png"))
    return str(root)


def test_scrub_drops_and_reports_each_problem(messy_folder):
    kept, report = scrub(load_sources([messy_folder]))
    dropped = {os.path.basename(d["file"]): d["reason"] for d in report["dropped"]}
    assert dropped.keys() == {"small.jpg", "broken.jpg", "real_000_copy.jpg"}
    assert dropped["small.jpg"] == "smaller than 150 px"
    assert dropped["real_000_copy.jpg"] == "exact duplicate"
    assert dropped["broken.jpg"].startswith("unreadable: ")
    assert report["dropped_by_reason"] == {"smaller than 150 px": 1, "unreadable": 1, "exact duplicate": 1}
    assert report["images_in"] == 18 and report["images_kept"] == 15 == len(kept)
    near_groups = [sorted(os.path.basename(f) for f in group) for group in report["near_duplicate_groups"]]
    assert ["fake_000.jpg", "near_000.jpg"] in near_groups


def test_same_image_with_both_labels_is_dropped(tmp_path):
    root = tmp_path / "conflict"
    make_image_folder(str(root), per_class=3)
    shutil.copy(root / "real" / "real_000.jpg", root / "fake" / "real_000_as_fake.jpg")
    kept, report = scrub(load_sources([str(root)]))
    reasons = {os.path.basename(d["file"]): d["reason"] for d in report["dropped"]}
    assert reasons == {"real_000.jpg": "same image labelled both fake and real",
                       "real_000_as_fake.jpg": "same image labelled both fake and real"}
    assert len(kept) == 5


def test_near_duplicate_groups_union_transitively():
    hashes = ["0000000000000000", "0000000000000007", "000000000000003f", "ffffffffffffffff"]
    groups = near_duplicate_groups(hashes, max_distance=3)
    assert groups[0] == groups[1] == groups[2] != groups[3]


# ---------------------------------------------------------------------------------------------------------
# Split


def test_split_is_stratified_seeded_and_keeps_duplicate_groups_together(tmp_path):
    folders = [make_image_folder(str(tmp_path / name), per_class=20, seed=i) for i, name in enumerate(("a", "b"))]
    # Near duplicates of several images: each group must land in one split.
    for i in range(5):
        img = Image.open(os.path.join(folders[0], "fake", f"fake_{i:03d}.jpg")).convert("RGB")
        img.save(os.path.join(folders[0], "fake", f"dup_{i:03d}.jpg"), quality=70)
    kept, report = scrub(load_sources(folders))
    splits = split(kept, val_fraction=0.2, test_fraction=0.2, seed=3)

    where = {}
    for name, part in splits.items():
        for image, group in zip(part["image"], part["group"]):
            where.setdefault(group, set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    assert sum(len(part) for part in splits.values()) == len(kept) == 85
    test_counts = {source: class_counts(splits["test"].filter(lambda s: s == source, input_columns="source"))
                   for source in ("a", "b")}
    # 20 % of each source and class: a has 25 fakes (5 near-duplicate pairs) and 20 reals, b 20 of each.
    assert test_counts["b"] == {"fake": 4, "real": 4} and test_counts["a"]["real"] == 4
    assert 4 <= test_counts["a"]["fake"] <= 6
    again = split(kept, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again["test"]["image"] == splits["test"]["image"]
    other = split(kept, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert other["test"]["image"] != splits["test"]["image"]


def test_max_eval_caps_each_source_and_class_and_the_rest_trains(tmp_path):
    folders = [make_image_folder(str(tmp_path / "big"), per_class=30, seed=0),
               make_image_folder(str(tmp_path / "small"), per_class=10, seed=1)]
    kept, _ = scrub(load_sources(folders))
    capped = split(kept, val_fraction=0.2, test_fraction=0.2, seed=0, max_eval=3)
    for name in ("validation", "test"):
        counts = Counter(zip(capped[name]["source"], capped[name]["label"]))
        # 20 % of 30 is 6, capped to 3; 20 % of 10 is 2, under the cap.
        assert counts == {("big", 0): 3, ("big", 1): 3, ("small", 0): 2, ("small", 1): 2}
    assert len(capped["train"]) == len(kept) - 20
    assert split(kept, val_fraction=0.2, test_fraction=0.2, seed=0, max_eval=100)["test"]["image"] == split(
        kept, val_fraction=0.2, test_fraction=0.2, seed=0)["test"]["image"]


def test_own_splits_are_kept_and_validation_carved_from_train(tmp_path):
    make_image_folder(str(tmp_path / "train"), per_class=10, seed=0)
    make_image_folder(str(tmp_path / "test"), per_class=4, seed=1)
    kept, _ = scrub(load_sources([str(tmp_path)]))
    splits = split(kept, val_fraction=0.2, seed=0)
    assert {n: len(p) for n, p in splits.items()} == {"train": 16, "validation": 4, "test": 8}
    assert all("/test/" in image["path"] for image in splits["test"]["image"])


def test_one_class_folder_per_source_is_labelled_by_its_folder(tmp_path):
    make_image_folder(str(tmp_path / "reals"), per_class=3)
    shutil.rmtree(tmp_path / "reals" / "fake")
    data = load_sources([str(tmp_path / "reals")])
    assert data["label"] == [1, 1, 1]


def test_single_class_data_is_a_clear_error(tmp_path):
    make_image_folder(str(tmp_path / "all"), per_class=5)
    shutil.rmtree(tmp_path / "all" / "fake")
    kept, _ = scrub(load_sources([str(tmp_path / "all")]))
    with pytest.raises(DataError, match=r"only one class .*add images of both fake and real"):
        split(kept)


# ---------------------------------------------------------------------------------------------------------
# The hidden-evaluation guard: what it lists never reaches a split


def _hidden_image(path):
    """An image the stand-in guard lists (it stands for a near-duplicate of a hidden evaluation image)."""
    return _save(Image.new("RGB", (160, 160), HIDDEN_COLOUR), path, quality=95)


@pytest.fixture
def guarded(tmp_path):
    """(folder of 3 + 3 images with one more real the guard lists, the stand-in guard script)."""
    folder = make_image_folder(str(tmp_path / "d"), per_class=3)
    _hidden_image(os.path.join(folder, "real", "zz_hidden.jpg"))
    return folder, write_guard(str(tmp_path))


def test_scrub_drops_what_the_guard_lists(guarded):
    folder, guard = guarded
    data = load_sources([folder])
    kept, report = scrub(data, guard=guard)
    assert [(os.path.basename(d["file"]), d["reason"]) for d in report["dropped"]] == [("zz_hidden.jpg", GUARD_REASON)]
    assert report["guard"] == {"script": guard, "checked": 7, "dropped": 1}
    # Run as several guard processes over shares of the images: the same image listed, every image checked.
    again, report = scrub(data, guard=guard, num_proc=3)
    assert again["image"] == kept["image"] and report["guard"] == {"script": guard, "checked": 7, "dropped": 1}
    assert report["dropped_by_reason"] == {GUARD_REASON: 1}
    assert len(kept) == 6 and "zz_hidden.jpg" not in {os.path.basename(i["path"]) for i in kept["image"]}
    # Without a guard the same image is kept: it is the guard's listing that drops it, nothing else.
    assert len(scrub(data)[0]) == 7


def test_scrub_guards_images_held_as_bytes(guarded):
    folder, guard = guarded
    data = load_sources([folder])
    held = datasets.Dataset.from_dict(
        {"image": [{"bytes": image_bytes(i), "path": None} for i in data["image"]], "label": data["label"],
         "source": data["source"], "split": data["split"]}, features=data.features)  # as a Hub dataset holds them
    kept, report = scrub(held, guard=guard)
    assert report["guard"]["dropped"] == 1 and len(kept) == 6
    assert not any(np.asarray(load_image(image_bytes(i))).mean((0, 1))[1] < 30 for i in kept["image"])


def test_training_data_is_guarded_and_a_finished_runs_splits_are_guarded_again(guarded, tmp_path):
    folder, guard = guarded
    data_args, _, train_args = parse_args(["--data", folder, "--guard", guard, "--output", str(tmp_path / "o"),
                                           "--val-fraction", "0.3", "--test-fraction", "0.3",
                                           "--preprocess-workers", "2"])
    splits, report, counts = prepare_data(data_args, train_args, Accelerator(cpu=True))
    files = [os.path.basename(i["path"]) for part in splits.values() for i in part["image"]]
    assert len(files) == 6 and "zz_hidden.jpg" not in files and report["guard"]["dropped"] == 1
    # A run from before training ran the guard: its splits.json names the image, and reusing those splits drops it.
    run = tmp_path / "old-run"
    run.mkdir()
    rows = {name: {"file": [i["path"] for i in part["image"]], "label": list(part["label"]),
                   "source": list(part["source"])} for name, part in splits.items()}
    rows["test"] = {k: v + [x] for (k, v), x in zip(rows["test"].items(), [os.path.join(folder, "real", "zz_hidden.jpg"),
                                                                           1, "d"])}
    (run / "splits.json").write_text(json.dumps({"rows": rows, "counts": {}}))
    old, old_report, old_counts = splits_from_run(str(run), guard=guard, processes=2)
    assert len(old["test"]) == len(splits["test"]) and old_report["splits_from_guard"] == {
        "script": guard, "checked": 7, "dropped": 1}
    assert old_counts == counts
    assert len(splits_from_run(str(run))[0]["test"]) == len(splits["test"]) + 1  # no guard: as saved


def test_max_per_source_samples_each_source_and_class_before_the_scrub(tmp_path):
    a = make_image_folder(str(tmp_path / "a"), per_class=9, seed=0)
    b = make_image_folder(str(tmp_path / "b"), per_class=3, seed=1)
    argv = ["--data", a, b, "--max-per-source", "5", "--output", str(tmp_path / "o"), "--val-fraction", "0.2",
            "--test-fraction", "0.2"]
    data_args, _, train_args = parse_args(argv)
    splits, report, _ = prepare_data(data_args, train_args, Accelerator(cpu=True))
    rows = [(s, y, i["path"]) for part in splits.values() for s, y, i in zip(part["source"], part["label"], part["image"])]
    assert report["images_in"] == 16  # 5 + 5 of a, 3 + 3 of b: the scrub read only the sample
    counts = {(s, y): sum(1 for r in rows if r[:2] == (s, y)) for s in ("a", "b") for y in (0, 1)}
    assert counts == {("a", 0): 5, ("a", 1): 5, ("b", 0): 3, ("b", 1): 3}
    again = prepare_data(*parse_args(argv)[::2], Accelerator(cpu=True))[0]  # seeded: the same sample
    assert sorted(i["path"] for part in again.values() for i in part["image"]) == sorted(r[2] for r in rows)


def test_each_image_s_group_is_its_source_s_family_or_collection(tmp_path):
    built = make_image_folder(str(tmp_path / "pool" / "flux-people"), per_class=1)
    with open(os.path.join(built, "source.json"), "w") as f:
        json.dump({"family": "Flux", "collection": "Unsplash (portraits, 2020)"}, f)
    plain = make_image_folder(str(tmp_path / "mine"), per_class=1)
    paths = [os.path.join(built, "fake", "fake_000.jpg"), os.path.join(built, "real", "real_000.jpg"),
             os.path.join(plain, "fake", "fake_000.jpg"), "../shared/data/ciplab/real/x.jpg"]
    groups = groups_of(paths, ["flux-people", "flux-people", "mine", "ciplab"], [0, 1, 0, 1])
    assert groups == ["Flux", "Unsplash", "mine", "CIPLab portraits"]


def test_guard_settings(tmp_path, monkeypatch):
    guard = write_guard(str(tmp_path))
    assert resolve_guard("none") is None and resolve_guard(guard) == guard
    monkeypatch.setenv("DEEPFAKE_GUARD", guard)
    assert resolve_guard("auto") == guard
    monkeypatch.setenv("DEEPFAKE_GUARD", str(tmp_path / "not-installed.py"))
    assert resolve_guard("auto") is None  # away from this workplace there is no guard to run
    with pytest.raises(DataError, match=r"^no guard at .*nope\.py: pass --guard PATH to holdout_guard\.py, 'auto' or 'none'\.$"):
        resolve_guard(str(tmp_path / "nope.py"))


# ---------------------------------------------------------------------------------------------------------
# Training augmentations


def _gradient(size=256):
    """Every pixel distinct, so a crop can be told from a resampled image."""
    y, x = np.mgrid[:size, :size]
    return Image.fromarray(np.stack([x, y, (x * 7 + y * 13) % 256], axis=-1).astype(np.uint8))


def test_native_crop_keeps_the_images_own_pixels():
    import random

    from train.data import Augment, augment_image

    img = _gradient(256)
    config = {"input_size": [3, 128, 128], "crop_pct": 0.5, "interpolation": "bilinear"}
    plain = Augment(flip=False, crop_scale=1.0, jpeg=0, blur=0, downscale=0)
    for seed in range(5):
        out = (augment_image(img, config, plain, random.Random(seed)).numpy() * 255).round().astype(np.uint8)
        left, top = int(out[0, 0, 0]), int(out[1, 0, 0])  # the gradient's x and y at the crop's corner
        np.testing.assert_array_equal(out.transpose(1, 2, 0), np.asarray(img.crop((left, top, left + 128, top + 128))))
    # At crop_pct 1 the whole image is resized to the input: the old behaviour, so shipped runs reproduce.
    whole = augment_image(img, dict(config, crop_pct=1.0), plain, random.Random(0))
    expected = np.asarray(img.resize((128, 128), Image.BILINEAR, box=(0, 0, 256, 256)), dtype=np.float32) / 255
    np.testing.assert_allclose(whole.numpy().transpose(1, 2, 0), expected, atol=1 / 255)


def test_self_blend_changes_the_face_and_leaves_the_corners():
    import random

    from train.data import self_blend

    img = face_like(np.random.RandomState(0), 200, fake=False)
    changed = 0
    for seed in range(20):
        out = np.asarray(self_blend(img, random.Random(seed)), dtype=np.int16)
        diff = np.abs(out - np.asarray(img, dtype=np.int16)).max(axis=-1)
        assert diff[:20, :20].max() == 0 and diff[-20:, -20:].max() == 0  # the mask stays on the face
        changed += diff[60:160, 60:140].max() > 0
    assert changed >= 18  # a rare draw may alter nothing visible (colour shift 0, no blur, no move)


def test_self_blended_fakes_are_extra_rows_drawn_anew_each_epoch(tmp_path):
    from train.data import Augment, ImageDataset

    kept, _ = scrub(load_sources([make_image_folder(str(tmp_path / "a"), per_class=10)]))
    config = {"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear", "mean": [0.5] * 3,
              "std": [0.5] * 3}
    dataset = ImageDataset(kept, config, augment=Augment(self_blend=0.5), seed=0)
    assert len(dataset) == 20 + 5
    assert [dataset[i][1] for i in range(20, 25)] == [0] * 5  # labelled fake
    first = [dataset[i][0] for i in range(20, 25)]
    torch.testing.assert_close(first, [dataset[i][0] for i in range(20, 25)])  # same epoch, same images
    dataset.set_epoch(1)
    assert not all(torch.equal(a, dataset[i][0]) for a, i in zip(first, range(20, 25)))
    assert len(ImageDataset(kept, config, augment=None)) == 20  # evaluation never gets synthetic fakes
