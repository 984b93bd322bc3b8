"""train.stack: the ensemble's combiner fitted on half of the members' validation split, the rest calibrates.

    python -m pytest tests/test_stack.py
"""

import csv
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deepfake_detector.images import load_image
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability
from deepfake_detector.modeling_deepfake_ensemble import DeepfakeEnsembleForImageClassification
from helpers import load_bench, make_image_folder
from train.loop import main as train_main
from train.stack import cross_fit, fit_combiner, fit_split, fold_split, main, routed_inputs

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


def test_folds_deal_out_every_source_and_label_evenly():
    labels = np.array([0] * 10 + [1] * 10 + [0] * 4 + [1] * 2)
    sources = np.array(["a"] * 20 + ["b"] * 6)
    fold = fold_split(labels, sources, 3, seed=0)
    assert sorted(set(fold)) == [0, 1, 2]
    for source in "ab":
        for label in (0, 1):
            counts = np.bincount(fold[(sources == source) & (labels == label)], minlength=3)
            assert counts.max() - counts.min() <= 1
    assert list(fold) == list(fold_split(labels, sources, 3, seed=0)) != list(fold_split(labels, sources, 3, seed=1))


def test_out_of_fold_logits_come_from_a_combiner_that_never_saw_the_row():
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] + 0.5 * torch.randn(60) > 0).long()
    fold = np.arange(60) % 3
    combiner = torch.nn.Linear(4, 2)
    init = {k: v.clone() for k, v in combiner.state_dict().items()}
    logits = cross_fit(combiner, x, y, fold, l2=1e-3)
    for k, v in combiner.state_dict().items():
        torch.testing.assert_close(v, init[k])  # the combiner itself is left for the fit on every row
    for k in range(3):
        alone = torch.nn.Linear(4, 2)
        alone.load_state_dict(init)
        fit_combiner(alone, x[fold != k], y[fold != k], 1e-3)
        with torch.no_grad():
            torch.testing.assert_close(logits[fold == k], alone(x[fold == k]))
    fit_combiner(combiner, x, y, 1e-3)
    with torch.no_grad():
        assert not torch.allclose(logits, combiner(x))  # in-sample logits are not out of fold


def test_leaving_members_out_keeps_the_combiner_inputs_a_smaller_ensemble_would_have():
    # bench/stack_fitting.py --leave-out: a gated ensemble's inputs without a member are columns of the whole one's
    torch.manual_seed(0)
    logits, probs = [torch.randn(5, 2) for _ in range(3)], {0: torch.randn(5, 4).softmax(1)}
    gates = [{"member": 1, "probe": 0, "classes": [0, 1]}, {"member": 2, "probe": 0, "classes": [2]}]

    def inputs(gates, logits):
        holder = SimpleNamespace(config=SimpleNamespace(gates=gates))
        holder.gate_value = lambda gate, p: DeepfakeEnsembleForImageClassification.gate_value(holder, gate, p)
        return DeepfakeEnsembleForImageClassification.combiner_input(holder, logits, probs)

    config = SimpleNamespace(members=[{"source": s} for s in ("probe", "a", "b")], gates=gates, num_labels=2)
    whole = inputs(gates, logits)
    columns, n = load_bench("stack_fitting").kept_columns(config, ["b"])
    assert n == 2
    torch.testing.assert_close(whole[:, columns], inputs(gates[:1], logits[:2]))
    columns, n = load_bench("stack_fitting").kept_columns(config, ["a"])
    torch.testing.assert_close(whole[:, columns], inputs([{**gates[1], "member": 1}], [logits[0], logits[2]]))
    # a routed gate goes with the probes its router reads: without the second probe, b's gate is gone
    routed = SimpleNamespace(members=[{"source": s} for s in ("probe", "a", "b", "probe2")], num_labels=2,
                             gates=[gates[0], {"member": 2, "router": 0}], routers=[{"probes": [0, 3]}])
    columns, n = load_bench("stack_fitting").kept_columns(routed, ["probe2"])
    assert n == 3 and columns == list(range(6)) + list(range(8, 14)) + [16]


@pytest.mark.slow
def test_a_cross_fitted_stack_calibrates_on_all_of_validation_out_of_fold(members, tmp_path, capsys):
    data, folders = members
    output = str(tmp_path / "ensemble")
    common = ["--data", *data, "--model", "ensemble", "--members", *folders, "--splits-from", folders[0],
              "--batch-size", "8", "--num-workers", "0", "--robustness", "jpeg_q75", "--cache-dir", str(tmp_path / "c")]
    assert main([*common, "--folds", "3", "--output", output]) == 0
    out, err = capsys.readouterr()
    assert "out of fold (3 folds)" in out and "members on validation" in err
    # the members' scores were kept: stacking them again (here without folds) does not run them
    again = str(tmp_path / "again")
    assert main([*common, "--output", again]) == 0
    assert "members on" not in capsys.readouterr().err
    # bench/stack_fitting.py compares the two fits from that cache, with the figures the runs wrote
    bench = load_bench("stack_fitting")
    bench.main(["--members", *folders, "--splits-from", folders[0], "--folds", "0", "3", "--sources", "a", "b",
                "--cache-dir", str(tmp_path / "c"), "--batch-size", "8"])
    out, err = capsys.readouterr()
    assert "members on" not in err
    printed = {line.split("  ")[0]: line for line in out.splitlines()}
    for name, run in (("split 0.5 / 0.5", again), ("cross-fitted, 3 folds", output)):
        test = json.load(open(os.path.join(run, "metrics.json")))["test"]
        assert printed[name].split()[len(name.split())] == f"{test['accuracy']:.3f}", printed[name]
    splits = json.load(open(os.path.join(output, "splits.json")))["rows"]
    members_splits = json.load(open(os.path.join(folders[0], "splits.json")))["rows"]
    assert splits["validation"]["file"] == members_splits["validation"]["file"]  # all of it, none set aside
    assert splits["test"]["file"] == members_splits["test"]["file"]
    classifier = load_pipeline(output)
    with open(os.path.join(output, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    reloaded = pipeline_fake_probability(classifier, [load_image(row["file"]) for row in rows])
    np.testing.assert_allclose(reloaded, [float(row["fake_probability"]) for row in rows], atol=1e-5)
    assert main([*common, "--folds", "1", "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("--folds takes 2 or more folds (or 0 for the --fit-fraction "
                                                    "split), not 1.")


@pytest.mark.slow
def test_a_stacked_ensemble_is_scored_on_the_members_test_split_and_reloads(members, tmp_path):
    data, folders = members
    output = str(tmp_path / "ensemble")
    argv = ["--data", *data, "--model", "ensemble", "--members", *folders, "--flip-tta", "--splits-from", folders[0],
            "--output", output, "--batch-size", "8", "--num-workers", "0", "--robustness", "jpeg_q75",
            "--cache-dir", str(tmp_path / "cache")]
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


def test_routers_fitted_out_of_fold_tell_a_member_s_sources_from_the_rest():
    # train.stack --route-members: g = sigmoid(w . log p + b) over a probe's class probabilities, fitted on
    # validation; where the probe's classes blur a source with another (here "a" spreads over classes 0 and 2), the
    # router learns which mix means "a"
    rng = np.random.default_rng(0)
    n = 200
    sources = np.array(["a", "b", "c", "d"] * (n // 4))
    class_logits = torch.as_tensor(rng.normal(scale=0.5, size=(n, 4)), dtype=torch.float32)
    class_logits[sources == "a", 0] += 2
    class_logits[sources == "a", 2] += 2
    class_logits[sources == "b", 2] += 3
    holder = SimpleNamespace(config=SimpleNamespace(routers=[{"probes": [0], "sources": ["a"]}],
                                                    gates=[{"member": 1, "router": 0}], num_labels=2),
                             routers=torch.nn.ModuleList([torch.nn.Linear(4, 1)]),
                             combiner=torch.nn.Linear(2 * 2 * 2 + 1, 2))
    for name in ("router_features", "gate_value", "combiner_input"):
        setattr(holder, name, getattr(DeepfakeEnsembleForImageClassification, name).__get__(holder))
    scores = {"logits": torch.randn(1, n, 4), "probs": {0: class_logits.softmax(1)[None]}}
    fold = fold_split(np.zeros(n, int), sources, 5, 0)
    x = routed_inputs(holder, scores, sources, fold, 1e-3)
    g_out_of_fold = x[:, -1].numpy()
    assert g_out_of_fold[sources == "a"].mean() > 0.7 and g_out_of_fold[sources != "a"].mean() < 0.3
    # the class sum over "a"'s likeliest class alone would not: b's images hold class 2 too
    p = scores["probs"][0][0]
    assert p[sources == "b", 2].mean() > p[sources == "a", 2].mean()
    # the routers are left fitted on every row, as they ship, and out-of-fold g is not in-sample g
    with torch.no_grad():
        g_shipped = holder.gate_value(holder.config.gates[0], {0: p})[:, 0].numpy()
    assert not np.allclose(g_shipped, g_out_of_fold)
    np.testing.assert_allclose(x[:, 4:8].numpy(), g_out_of_fold[:, None] * x[:, :4].numpy(), rtol=1e-6)
