"""train.stack: the ensemble's combiner fitted on half of the members' validation split, the rest calibrates.

    python -m pytest tests/test_stack.py
"""

import csv
import json
import os

import numpy as np
import pytest

from deepfake_detector.images import load_image
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability
from helpers import make_image_folder
from train.loop import main as train_main
from train.stack import fit_split, main

TINY = ["--image-size", "48", "--width", "0.25", "--batch-size", "8", "--num-workers", "0"]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    data = [make_image_folder(str(root / "a"), per_class=12, seed=0), make_image_folder(str(root / "b"), per_class=12, seed=1)]
    folders = []
    for name in ("tuned-cnn", "xception"):
        folders.append(str(root / name))
        assert train_main(["--data", *data, "--model", name, "--epochs", "2", "--output", folders[-1], *TINY]) == 0
    return data, folders


def test_the_fit_share_is_taken_from_every_source_and_label():
    labels = np.array([0] * 10 + [1] * 10 + [0] * 4 + [1] * 4)
    sources = np.array(["a"] * 20 + ["b"] * 8)
    fit, rest = fit_split(labels, sources, 0.5, seed=0)
    assert len(fit) == 14 and sorted(np.concatenate([fit, rest])) == list(range(28))
    for source in "ab":
        for label in (0, 1):
            group = (sources == source) & (labels == label)
            assert group[fit].sum() == group.sum() // 2


@pytest.mark.slow
def test_a_stacked_ensemble_is_scored_on_the_members_test_split_and_reloads(members, tmp_path):
    data, folders = members
    output = str(tmp_path / "ensemble")
    argv = ["--data", *data, "--model", "ensemble", "--members", *folders, "--flip-tta", "--splits-from", folders[0],
            "--output", output, "--batch-size", "8", "--num-workers", "0", "--robustness", "jpeg_q75"]
    assert main(argv) == 0
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    member = json.load(open(os.path.join(folders[0], "metrics.json")))
    assert metrics["test"]["n"] == member["test"]["n"]  # the members' own test split, all of it
    splits = json.load(open(os.path.join(output, "splits.json")))["rows"]
    members_splits = json.load(open(os.path.join(folders[0], "splits.json")))["rows"]
    assert splits["test"]["file"] == members_splits["test"]["file"]
    # validation is the half the combiner was not fitted on
    assert set(splits["validation"]["file"]) < set(members_splits["validation"]["file"])
    assert metrics["members"] == folders and metrics["library_name"] == "transformers"
    classifier = load_pipeline(output)
    with open(os.path.join(output, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    reloaded = pipeline_fake_probability(classifier, [load_image(row["file"]) for row in rows])
    np.testing.assert_allclose(reloaded, [float(row["fake_probability"]) for row in rows], atol=1e-5)


def test_a_stack_without_members_run_is_one_clear_line(tmp_path, capsys):
    data, folders = [make_image_folder(str(tmp_path / "a"), per_class=2)], [str(tmp_path / "m1"), str(tmp_path / "m2")]
    code = main(["--data", *data, "--model", "ensemble", "--members", *folders, "--output", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("train.stack: error: pass --splits-from")
    code = main(["--data", *data, "--model", "xception", "--splits-from", folders[0], "--output", str(tmp_path / "o")])
    assert code == 2
    assert "fits an ensemble's logits combiner" in capsys.readouterr().err
