"""Training end to end on tiny generated data: every model through the CLI, reload, resume, bad input, metrics."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deepfake_detector.images import load_image
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability, verdict
from tests.helpers import load_bench, make_image_folder
from train import evaluate as ev
from train.data import load_sources, scrub
from train.loop import main

TINY = ["--image-size", "48", "--width", "0.25", "--batch-size", "8", "--num-workers", "0"]
FILES = {"config.json", "model.safetensors", "metrics.json", "report.md", "run_config.json", "scrub_report.json",
         "splits.json", "history.csv", "test_predictions.csv", "confusion_matrix.png", "roc.png",
         "training_curves.png", "processing_deepfake_faces.py", "faces.py"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [make_image_folder(str(root / "a"), per_class=10, seed=0), make_image_folder(str(root / "b"), per_class=10, seed=1)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """tuned-cnn and xception trained once (2 epochs) for the tests that need trained folders."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for name in ("tuned-cnn", "xception"):
        folders[name] = str(root / name)
        argv = ["--data", *data, "--model", name, "--epochs", "2", "--output", folders[name], *TINY, "--crop-pct", "0.75"]
        assert main(argv) == 0
    return folders


def _pipeline_matches_predictions(folder):
    """The saved model, loaded by pipeline(), gives the probabilities the run computed in memory (calibrated)."""
    classifier = load_pipeline(folder)
    with open(os.path.join(folder, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    assert rows
    images = [load_image(row["file"]) for row in rows]
    reloaded = pipeline_fake_probability(classifier, images)
    expected = np.array([float(row["fake_probability"]) for row in rows])
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["tuned-cnn", "xception"])
def test_model_trains_and_reloads_with_identical_outputs(runs, name):
    folder = runs[name]
    assert set(os.listdir(folder)) == FILES
    assert not os.path.exists(folder + ".partial")
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert metrics["model"] == name and metrics["test"]["n"] == 8
    assert set(metrics["robustness"]) == {"clean", "jpeg_q90", "jpeg_q75", "jpeg_q50", "blur", "downscale_64"}
    assert metrics["training"]["epochs_run"] == 2 and metrics["training"]["train_images_per_s"] > 0
    assert metrics["training"]["command"].startswith("python -m train --data ")
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["label_names"] == ["fake", "real"] and "num_classes" not in config["model_args"]
    # The thresholds travel with the model: config.json carries what the run chose on validation.
    assert config["verdict_thresholds"] == metrics["thresholds"]
    assert set(metrics["verdicts"]["per_source"]) == {"a", "b"}
    assert metrics["verdicts"]["overall"]["n"] == 8
    _pipeline_matches_predictions(folder)
    # The scoring benchmark (bench/score_models.py) reproduces the card's figures on the run's own test split.
    scored = ev.score_rows(folder, ev.test_split_rows(folder))
    assert scored["n"] == metrics["test"]["n"] and scored["accuracy"] == metrics["test"]["accuracy"]
    assert scored["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert scored["verdicts"] == metrics["verdicts"]


def test_ensemble_trains_from_members_and_reloads(runs, data, tmp_path):
    output = str(tmp_path / "ensemble")
    argv = ["--data", *data, "--model", "ensemble", "--members", runs["tuned-cnn"], runs["xception"],
            "--epochs", "1", "--output", output, "--batch-size", "8", "--num-workers", "0"]
    assert main(argv) == 0
    assert set(os.listdir(output)) == FILES | {"modeling_deepfake_ensemble.py", "preprocessor_config.json"}
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["library_name"] == "transformers" and metrics["members"] == [runs["tuned-cnn"], runs["xception"]]
    _pipeline_matches_predictions(output)


def test_resume_gives_the_same_result_as_not_stopping(data, tmp_path):
    common = ["--data", *data, "--model", "tuned-cnn", "--epochs", "3", "--augment-self-blend", "0.5", "--mixup", "0.2",
              "--cutmix", "1.0", *TINY]
    straight = str(tmp_path / "straight")
    assert main([*common, "--output", straight]) == 0

    stopped = str(tmp_path / "stopped")
    assert main([*common, "--output", stopped, "--time-limit-minutes", "0"]) == 0
    assert not os.path.exists(stopped) and os.path.isdir(stopped + ".partial")
    state = json.load(open(os.path.join(stopped + ".partial", "checkpoint", "trainer_state.json")))
    assert state["epoch"] == 1
    assert main([*common, "--output", stopped, "--resume"]) == 0

    a, b = load_file(os.path.join(straight, "model.safetensors")), load_file(os.path.join(stopped, "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    history = [list(csv.DictReader(open(os.path.join(f, "history.csv")))) for f in (straight, stopped)]
    assert [r["train_loss"] for r in history[0]] == [r["train_loss"] for r in history[1]]


def test_init_from_continues_a_trained_model_at_another_input_size(runs, data, tmp_path):
    # --init-from starts from the trained weights, not from scratch: at 0 epochs' worth of learning rate the
    # continued model is the trained one, read at the new input size.
    output = str(tmp_path / "continued")
    argv = ["--data", *data, "--model", "xception", "--init-from", runs["xception"], "--epochs", "1",
            "--learning-rate", "0", "--output", output, "--width", "0.25", "--image-size", "56", "--batch-size", "8",
            "--num-workers", "0", "--crop-pct", "0.75"]
    assert main(argv) == 0
    start, continued = (load_file(os.path.join(f, "model.safetensors")) for f in (runs["xception"], output))
    classifier = {k for k in start if k.startswith("head.fc.")}
    assert classifier  # the classifier is rescaled by the new run's own calibration temperature; the rest is equal
    for key in set(start) - classifier:
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(start[key], continued[key], msg=key)
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["init_from"] == runs["xception"] and metrics["image_size"] == 56


def test_a_specialist_trains_on_a_wider_run_s_rows_of_its_sources(runs, data, tmp_path, capsys):
    # --splits-from with some of a run's sources: the specialist's rows are that run's rows of those sources, in
    # the same splits, so an ensemble of both never scores a row one of them trained on.
    output = str(tmp_path / "on-a")
    capsys.readouterr()
    assert main(["--data", data[0], "--model", "tuned-cnn", "--epochs", "1", "--splits-from", runs["tuned-cnn"],
                 "--output", output, *TINY, "--crop-pct", "0.75"]) == 0
    assert "only the --data sources' rows are kept (1 of its sources left out: b)" in capsys.readouterr().out
    old = json.load(open(os.path.join(runs["tuned-cnn"], "splits.json")))["rows"]
    new = json.load(open(os.path.join(output, "splits.json")))["rows"]
    for name in ("train", "validation", "test"):
        assert new[name]["file"] == [f for f, s in zip(old[name]["file"], old[name]["source"]) if s == "a"]
    assert json.load(open(os.path.join(output, "run_config.json")))["DataArguments"]["splits_from"] == runs["tuned-cnn"]


def test_init_from_another_kind_of_model_is_one_clear_line(capsys, runs, data, tmp_path):
    code, line = _error(capsys, ["--data", *data, "--model", "tuned-cnn", "--init-from", runs["xception"],
                                 "--output", str(tmp_path / "o"), *TINY])
    assert code == 2 and "does not fit a tuned-cnn" in line and "same --model and --width" in line
    assert not os.path.exists(tmp_path / "o")


# ---------------------------------------------------------------------------------------------------------
# Bad input: one clear line, exit code 2, nothing written


def _error(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_missing_data_path(capsys, tmp_path):
    code, line = _error(capsys, ["--data", str(tmp_path / "nope"), "--model", "tuned-cnn", "--output", str(tmp_path / "o")])
    assert code == 2 and line == f"train: error: {tmp_path / 'nope'} does not exist: pass an image folder (real/ and fake/ inside) or a Hub dataset id."
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "o.partial")


def test_unknown_model(capsys, data, tmp_path):
    code, line = _error(capsys, ["--data", data[0], "--model", "resnet", "--output", str(tmp_path / "o")])
    assert code == 2 and line == "train: error: Unknown model 'resnet': choose one of tuned-cnn, xception, efficientnet-lite2, efficientnet-lite0, dinov2-vits14, ensemble."


def test_members_that_do_not_exist(capsys, data, tmp_path):
    code, line = _error(capsys, ["--data", data[0], "--model", "ensemble", "--members", str(tmp_path / "x"),
                                 str(tmp_path / "y"), "--output", str(tmp_path / "o"), "--num-workers", "0"])
    assert code == 2 and line.startswith(f"train: error: --members {tmp_path / 'x'}: not a trained model folder")
    assert not os.path.exists(tmp_path / "o.partial")


def test_members_that_see_different_shares_of_the_image(capsys, runs, data, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.safetensors", "config.json"):
        (other / name).write_bytes(open(os.path.join(runs["tuned-cnn"], name), "rb").read())
    config = json.load(open(other / "config.json"))
    config["pretrained_cfg"]["crop_pct"] = 1.0
    json.dump(config, open(other / "config.json", "w"))
    code, line = _error(capsys, ["--data", data[0], "--model", "ensemble", "--members", str(other), runs["xception"],
                                 "--output", str(tmp_path / "o"), "--num-workers", "0"])
    assert code == 2 and "different shares of the image (--crop-pct [0.75, 1.0])" in line


def test_members_with_other_labels(capsys, runs, data, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.safetensors", "config.json"):
        (other / name).write_bytes(open(os.path.join(runs["tuned-cnn"], name), "rb").read())
    config = json.load(open(other / "config.json"))
    config["label_names"] = ["cat", "dog"]
    json.dump(config, open(other / "config.json", "w"))
    code, line = _error(capsys, ["--data", data[0], "--model", "ensemble", "--members", str(other), runs["xception"],
                                 "--output", str(tmp_path / "o"), "--num-workers", "0"])
    assert code == 2 and "has labels {0: 'cat', 1: 'dog'}, not {0: 'fake', 1: 'real'}" in line


def test_existing_output_is_not_overwritten(capsys, runs, data):
    before = os.path.getmtime(os.path.join(runs["tuned-cnn"], "model.safetensors"))
    code, line = _error(capsys, ["--data", data[0], "--model", "tuned-cnn", "--output", runs["tuned-cnn"]])
    assert code == 2 and line == f"train: error: {runs['tuned-cnn']} already exists: choose another --output or pass --overwrite."
    assert os.path.getmtime(os.path.join(runs["tuned-cnn"], "model.safetensors")) == before


def test_single_class_data(capsys, tmp_path):
    folder = make_image_folder(str(tmp_path / "one"), per_class=4)
    for f in os.listdir(os.path.join(folder, "fake")):
        os.remove(os.path.join(folder, "fake", f))
    os.rmdir(os.path.join(folder, "fake"))
    code, line = _error(capsys, ["--data", folder, "--model", "tuned-cnn", "--output", str(tmp_path / "o")])
    assert code == 2 and "only one class" in line and line.endswith("add images of both fake and real.")


def test_cli_exit_code_and_single_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path), "--model", "xception",
                             "--output", str(tmp_path / "o"), "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"train: error: Nothing to resume in {tmp_path / 'o'}.partial: start the run without --resume."


def test_decompression_bomb_in_training_data_is_dropped(tmp_path):
    folder = make_image_folder(str(tmp_path / "d"), per_class=2)
    Image.new("1", (11000, 10000)).save(os.path.join(folder, "fake", "bomb.png"))
    kept, report = scrub(load_sources([folder]))
    assert [(os.path.basename(d["file"]), d["reason"]) for d in report["dropped"]] == [("bomb.png", "over the pixel limit")]
    assert len(kept) == 4


# ---------------------------------------------------------------------------------------------------------
# Metrics, checked by hand


def test_metrics_on_a_hand_checked_confusion_matrix():
    labels = [0, 0, 0, 1, 1, 1, 1, 1]  # fake, fake, fake, real × 5
    p_fake = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.1, 0.4]
    m = ev.classification_metrics(labels, p_fake)
    assert m["confusion_matrix"] == [[2, 1], [1, 4]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["weighted_recall"] == pytest.approx(3 / 8 * 2 / 3 + 5 / 8 * 4 / 5)
    assert m["auc"] == pytest.approx(13 / 15)
    assert m["classification_report"]["fake"]["precision"] == pytest.approx(2 / 3)
    assert m["classification_report"]["real"]["recall"] == pytest.approx(4 / 5)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.RandomState(0)
    z = rng.normal(0, 2, size=20000)
    labels = (rng.rand(20000) < 1 / (1 + np.exp(z))).astype(int)  # P(fake = class 0) = sigmoid(z)
    logits = np.stack([z, np.zeros_like(z)], axis=1) * 3.0  # over-confident by a factor of 3
    temperature = ev.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = ev.expected_calibration_error(labels, ev.fake_probability_of(logits))
    after = ev.expected_calibration_error(labels, ev.fake_probability_of(logits, temperature))
    assert after < 0.02 < before


def test_a_temperature_the_optimiser_cannot_find_is_the_better_bound_not_nan():
    # four validation rows (a fixture's): every one leans fake, so NLL falls as T grows without end; LBFGS gave NaN
    logits = np.array([[0.1509186029434204, -0.15090495347976685], [0.05198103189468384, -0.05196678638458252],
                       [0.29667365550994873, -0.29666197299957275], [0.10687947273254395, -0.10686588287353516]])
    assert ev.fit_temperature(logits, np.array([0, 1, 0, 1])) == 20.0


def test_thresholds_and_verdicts():
    labels = np.array([0] * 50 + [1] * 50)
    p_fake = np.concatenate([np.linspace(0.55, 1.0, 50), np.linspace(0.0, 0.6, 50)])
    t = ev.choose_thresholds(labels, p_fake, target_precision=0.95, confidence=None)
    # With no confidence asked, each threshold is the loosest on the 0.01 grid whose verdicts are >= 95 % right.
    chosen = p_fake >= t["fake"]
    assert (labels[chosen] == 0).mean() >= 0.95 and (labels[p_fake >= t["fake"] - 0.01] == 0).mean() < 0.95
    assert t["validation_precision"]["fake"] == (labels[chosen] == 0).mean()
    # Every P(fake) <= 0.5 is a real image: the loosest real threshold allowed (0.5) is right 100 % of the time.
    assert t["real"] == 0.5 and t["validation_precision"]["real"] == 1.0
    assert verdict(0.99, t) == "fake" and verdict(0.01, t) == "real" and verdict((t["fake"] + t["real"]) / 2, t) == "uncertain"


def test_thresholds_keep_a_margin_that_shrinks_with_the_validation_split():
    # A Wilson lower bound: 95 of 100 right is not yet "95 % with 95 % confidence", 990 of 1,000 is.
    assert ev.precision_lower_bound(95, 100, None) == 0.95
    assert ev.precision_lower_bound(95, 100) == pytest.approx(0.9008, abs=1e-4)  # Wilson, z = 1.645, by hand
    assert ev.precision_lower_bound(990, 1000) > 0.98
    rng = np.random.RandomState(0)

    def validation(n):  # P(fake) = a fake's true chance of being fake: every threshold's precision is known
        p_fake = rng.rand(n)
        return (rng.rand(n) >= p_fake).astype(int), p_fake

    small, large = validation(2000), validation(40000)
    plain = ev.choose_thresholds(*small, target_precision=0.9, confidence=None)
    sure = ev.choose_thresholds(*small, target_precision=0.9)
    assert sure["fake"] > plain["fake"] and sure["real"] < plain["real"] and sure["confidence"] == 0.95
    labels, p_fake = small
    for side, chosen, wanted in (("fake", p_fake >= sure["fake"], 0), ("real", p_fake <= sure["real"], 1)):
        right, n = int((labels[chosen] == wanted).sum()), int(chosen.sum())
        assert ev.precision_lower_bound(right, n) >= 0.9 and sure["validation_precision"][side] == right / n
    big = ev.choose_thresholds(*large, target_precision=0.9)
    # Precision at threshold t is (1 + t) / 2 here: 0.9 from t = 0.8. 40k rows pin that within a step or two.
    assert 0.8 <= big["fake"] <= 0.83 and 0.17 <= big["real"] <= 0.2


def test_refit_thresholds_rewrites_config_and_the_test_verdicts_at_them(runs, tmp_path):
    folder = str(tmp_path / "run")
    shutil.copytree(runs["tuned-cnn"], folder)
    thresholds = ev.refit_thresholds(folder, target_precision=0.6, confidence=0.5)
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert metrics["thresholds"] == thresholds and thresholds["confidence"] == 0.5
    assert json.load(open(os.path.join(folder, "config.json")))["verdict_thresholds"]["fake"] == thresholds["fake"]
    with open(os.path.join(folder, "test_predictions.csv")) as f:
        test = list(csv.DictReader(f))
    expected = ev.verdict_metrics([0 if row["label"] == "fake" else 1 for row in test],
                                  [float(row["fake_probability"]) for row in test], thresholds)
    assert metrics["verdicts"]["thresholds"] == {"fake": thresholds["fake"], "real": thresholds["real"]}
    assert metrics["verdicts"]["overall"] == expected and expected["n"] == len(test)


def test_uncertain_share_and_accuracy_of_committed_verdicts():
    labels = [0, 0, 0, 1, 1, 1]  # fake = 0
    p_fake = [0.9, 0.5, 0.1, 0.95, 0.45, 0.05]  # fake right, uncertain, real wrong; fake wrong, uncertain, real right
    m = ev.verdict_metrics(labels, p_fake, {"fake": 0.8, "real": 0.2})
    assert m == {"n": 6, "uncertain_share": pytest.approx(2 / 6), "committed": 4, "committed_accuracy": 0.5}
    by_source = ev.verdicts_by_source(labels, p_fake, ["x", "x", "x", "y", "y", "y"], {"fake": 0.8, "real": 0.2})
    assert by_source["per_source"]["x"]["committed_accuracy"] == 0.5 and by_source["overall"] == m
    assert ev.verdict_metrics([0], [0.5], {"fake": 0.8, "real": 0.2})["committed_accuracy"] is None


def test_rescoring_crops_each_image_to_its_face_box_as_the_run_did(tmp_path):
    image = tmp_path / "face.png"
    Image.new("RGB", (400, 300), (90, 120, 150)).save(image)
    (tmp_path / "splits.json").write_text(json.dumps({"rows": {"test": {
        "file": [str(image), str(image)], "label": [0, 1], "source": ["s", "s"], "face_box": [[100, 100, 200, 200], []]}}}))
    (tmp_path / "run_config.json").write_text(json.dumps({"DataArguments": {"reencode_jpeg": 90}}))
    rows = ev.test_split_rows(str(tmp_path))
    cropped, whole = ev.run_images(str(tmp_path), rows)
    assert cropped.size == (160, 160) and whole.size == (400, 300)  # the 100 px box with the app's 30 % margin
    assert whole.getpixel((0, 0)) != (90, 120, 150)  # re-encoded as JPEG q90 first, as --reencode-jpeg trained


def test_a_weak_model_still_gets_verdicts_at_its_best_precision():
    rng = np.random.RandomState(0)
    p_fake = rng.rand(400)
    labels = (rng.rand(400) >= 0.5 + 0.3 * (p_fake - 0.5)).astype(int)  # P(fake) hardly informative: never 99 % sure
    t = ev.choose_thresholds(labels, p_fake, target_precision=0.99)
    assert 0.5 < t["fake"] < 0.99 and 0.01 < t["real"] < 0.5
    assert (p_fake >= t["fake"]).sum() >= 10 and (p_fake <= t["real"]).sum() >= 10  # >= 5 % of each class
    assert t["validation_precision"]["fake"] == (labels[p_fake >= t["fake"]] == 0).mean() < 0.99


@pytest.mark.slow
def test_two_cpu_processes_see_every_test_image_once(data, tmp_path):
    output = str(tmp_path / "ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "train",
               "--data", *data, "--model", "tuned-cnn", "--epochs", "1", "--output", output, *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["test"]["n"] == 8 and "× 2 process(es)" in metrics["training"]["device"]
    rows = list(csv.DictReader(open(os.path.join(output, "test_predictions.csv"))))
    assert len({row["file"] for row in rows}) == 8


def test_a_run_on_a_hub_dataset_cannot_be_rescored_from_its_splits(tmp_path):
    rows = {"file": [None, None], "label": [0, 1], "source": ["user/faces", "user/faces"]}
    (tmp_path / "splits.json").write_text(json.dumps({"counts": {}, "rows": {"test": rows}}))
    with pytest.raises(ev.DataError, match=r"trained on a Hub dataset.*--data <the dataset> instead"):
        ev.test_split_rows(str(tmp_path))


@pytest.mark.parametrize("flags, message", [
    (["--model", "tuned-cnn", "--flip-tta"], "--members, --drop-members and --flip-tta only apply to --model ensemble."),
    (["--model", "ensemble", "--members", "a", "b", "--crop-pct", "0.5"], "--crop-pct does not apply to the ensemble"),
    (["--model", "tuned-cnn", "--crop-pct", "1.5"], "--crop-pct takes a share of the image between 0 and 1"),
    (["--model", "tuned-cnn", "--augment-self-blend", "-1"], "--augment-self-blend takes a share of the real images"),
    (["--model", "tuned-cnn", "--mixup", "-0.2"], "--mixup and --cutmix take a Beta-distribution alpha"),
    (["--model", "tuned-cnn", "--init-from", "a", "--pretrained"], "--init-from brings its own weights"),
    (["--model", "tuned-cnn", "--guard", "/nowhere/holdout_guard.py"], "no guard at /nowhere/holdout_guard.py: pass --guard PATH"),
    (["--model", "tuned-cnn", "--max-eval-per-source", "0"], "--max-eval-per-source takes a positive number of images."),
    (["--model", "tuned-cnn", "--preprocess-workers", "0"], "--preprocess-workers takes a number of processes, 1 or more."),
])
def test_option_misuse_is_one_clear_line(capsys, tmp_path, flags, message):
    code, line = _error(capsys, ["--data", str(tmp_path), *flags, "--output", str(tmp_path / "o")])
    assert code == 2 and message in line
    assert not os.path.exists(tmp_path / "o")


def test_score_models_scores_another_run_s_test_rows_and_writes_what_family_figures_reads(runs, tmp_path, capsys):
    out = str(tmp_path / "scored")
    load_bench("score_models").main([runs["tuned-cnn"], "--test-split-of", runs["xception"], "--exclude-source",
                                     "b", "--clean-only", "--predictions", out])
    with open(os.path.join(out, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    theirs = json.load(open(os.path.join(runs["xception"], "splits.json")))["rows"]["test"]
    assert [r["file"] for r in rows] == [f for f, s in zip(theirs["file"], theirs["source"]) if s != "b"]
    expected = ev.score_rows(runs["tuned-cnn"], ev.test_split_rows(runs["xception"]).filter(
        lambda s: s == "a", input_columns="source"), degradations=("clean",))["fake_probability"]
    np.testing.assert_allclose([float(r["fake_probability"]) for r in rows], expected, atol=1e-6)
    capsys.readouterr()
    load_bench("family_figures").main([out])
    printed = capsys.readouterr().out
    assert f"{len(rows)}  " in printed.splitlines()[1] and "lowest family AUC" in printed
