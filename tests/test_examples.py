"""The app's examples (deepfake_detector.examples) and how verdicts are worded (deepfake_detector.report).

    python -m pytest tests/test_examples.py -q

The examples are picked from a tiny fake repository: a splits.json naming images made in the test, and a data
folder for a set the splits do not include. Face counting is stubbed (MTCNN is tested in test_app.py).
"""

import json

import av
import pytest
from PIL import Image

from deepfake_detector import examples
from deepfake_detector.report import probability_text, track_record


# ---- probability_text: the precision the decision needs ------------------------------------------------


@pytest.mark.parametrize("p, shown", [
    (0.2141, "0.214"),   # the case: 0.21 would read as "real if ≤ 0.21", but 0.2141 is uncertain
    (0.2100, "0.21"),    # exactly on the threshold: real, and two decimals say so
    (0.2099, "0.21"),    # real, and 0.21 is real too
    (0.8399, "0.8399"),  # uncertain: 0.84 (and 0.840) would read as fake
    (0.8400, "0.84"),
    (0.5, "0.50"),
    (0.210001, "0.210001"),
])
def test_probability_is_shown_with_the_decimals_its_verdict_needs(p, shown):
    assert probability_text(p, {"fake": 0.84, "real": 0.21}) == shown


def test_track_record_says_only_what_metrics_json_holds():
    assert track_record({}) == ""
    validation = {"thresholds": {"validation_precision": {"fake": 0.8723, "real": 0.8667}}}
    assert track_record(validation) == ("Track record at its default thresholds: right when it said fake 87% / "
                                        "real 87% on validation.")
    test = {"verdicts": {"overall": {"n": 601, "uncertain_share": 0.412, "committed": 353, "committed_accuracy": 0.83}}}
    assert track_record({**validation, **test}) == (
        "Track record at its default thresholds: right when it said fake 87% / real 87% on validation; said "
        "uncertain on 41% of 601 test images; right on 83% of the test images it did not call uncertain.")
    assert "None" not in track_record({"verdicts": {"overall": {"uncertain_share": None}}})


# ---- picking and writing the examples ----------------------------------------------------------------


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root with data/<set>/<label>/*.jpg and a model whose splits hold faces140k and ciplab."""
    root = tmp_path / "repo"
    data = tmp_path / "data"
    rows = {split: {"file": [], "label": [], "source": []} for split in ("train", "validation", "test")}
    colour = iter(range(200))  # a different image each: the picks must not collide as duplicates
    for source in ("faces140k", "ciplab", "stylegan2-thumbs", "sd-people", "lfw-faceswap"):
        for label in ("real", "fake"):
            folder = data / source / label
            folder.mkdir(parents=True)
            for i in range(10):
                Image.new("RGB", (64, 64), (next(colour), 80, 120)).save(folder / f"{label}{i}.jpg")
                if source in ("faces140k", "ciplab"):  # the model was trained on these two sets
                    split = "test" if i < 6 else "train"
                    rows[split]["file"].append(f"../data/{source}/{label}/{label}{i}.jpg")
                    rows[split]["label"].append(0 if label == "fake" else 1)
                    rows[split]["source"].append(source)
    model = root / "models" / "ensemble"
    model.mkdir(parents=True)
    (model / "splits.json").write_text(json.dumps({"counts": {}, "rows": rows}))
    Image.new("RGB", (64, 64)).save(root / "no-face.jpg")
    monkeypatch.setattr(examples, "ROOT", root)
    return root, data, model


def test_examples_come_from_test_rows_or_unseen_sets_with_captions(repo, tmp_path):
    root, data, model = repo
    out = tmp_path / "examples"
    manifest = examples.make_examples(model, data, out, seed=0, count_faces=lambda path: 2)
    by_file = {e["file"]: e for e in manifest["images"]}
    assert set(by_file) == {f"{stem}.jpg" for stem, *_ in examples.KINDS}
    test_files = {f for f in json.loads((model / "splits.json").read_text())["rows"]["test"]["file"]}
    for entry in manifest["images"]:
        assert entry["caption"].startswith(entry["truth"].upper() + " · ") and entry["source"] in entry["caption"]
        assert entry["original"].split("/")[-2] == entry["truth"]  # from the folder of its class
        if entry["source"] in ("faces140k", "ciplab"):  # in the splits: a test row, never train
            assert entry["split"] == "test" and entry["original"] in test_files
            assert "held-out test image" in entry["caption"]
        else:
            assert entry["split"] == "not in the model's splits"
            assert f"this model was not trained on {entry['source']}" in entry["caption"]
        assert (out / entry["file"]).read_bytes() == (root / entry["original"]).read_bytes()  # copied as is
    assert by_file["real-flickr.jpg"]["original"] != by_file["real-group.jpg"]["original"]

    clip = av.open(str(out / manifest["clip"]["file"]))
    stream = clip.streams.video[0]
    assert stream.codec_context.name == "h264" and stream.frames == 2 * examples.CLIP_FACES * 5
    assert all(f in test_files for f in manifest["clip"]["frames_from"])
    assert manifest["clip"]["caption"].startswith("REAL for 2 s, then FAKE for 2 s")

    images, clip_example = examples.read_manifest(out)  # what the app shows
    assert [e.caption for e in images] == [e["caption"] for e in manifest["images"]]
    assert clip_example.caption == manifest["clip"]["caption"]


def test_rerunning_is_deterministic_and_replaces_the_previous_examples(repo, tmp_path):
    root, data, model = repo
    out = tmp_path / "examples"
    first = examples.make_examples(model, data, out, seed=0, count_faces=lambda path: 2)
    stale = out / first["images"][0]["file"]
    again = examples.make_examples(model, data, out, seed=0, count_faces=lambda path: 2)
    assert again["images"] == first["images"]
    other = examples.make_examples(model, data, out, seed=1, count_faces=lambda path: 2)
    assert other["images"] != first["images"] and stale.exists()  # same names, other picks, rewritten


def test_a_kind_without_enough_faces_is_skipped_not_faked(repo, tmp_path):
    root, data, model = repo
    manifest = examples.make_examples(model, data, tmp_path / "examples", count_faces=lambda path: 1)
    assert "real-group.jpg" not in {e["file"] for e in manifest["images"]}  # no photo with 2+ faces
