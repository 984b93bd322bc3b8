"""train.probe: a frozen ViT read at several blocks, one class per (source, label), the fake classes summed.

    python -m pytest tests/test_probe.py

The DINOv2 ViT-S/14 layout at 28 px (2x2 patches), as in test_cached.py: real depth and width, few tokens.
"""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from deepfake_detector import explain
from deepfake_detector.card import model_card
from deepfake_detector.images import load_image
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability
from deepfake_detector.modeling_deepfake_ensemble import FeatureProbe
from deepfake_detector.models import create_model
from helpers import load_bench, make_image_folder
from train.cached import Split
from train.loop import main as train_main
from train.probe import class_names, main
from train.stack import main as stack_main

TINY = ["--model", "dinov2-vits14", "--image-size", "28", "--batch-size", "8", "--num-workers", "0"]


def _probe(layers, class_labels=(0, 1), pooling=("cls", "mean")):
    torch.manual_seed(0)
    vit = create_model("dinov2-vits14", image_size=28)
    probe = FeatureProbe(vit.pretrained_cfg["architecture"], vit.model_args, layers, list(class_labels),
                         pooling).eval()
    probe.backbone.load_state_dict({k: v for k, v in vit.state_dict().items() if not k.startswith("head.")})
    return probe


def test_the_collapsed_logits_give_the_summed_probability_of_each_label_s_classes():
    probe = _probe([11], class_labels=[0, 1, 0, 0, 1])
    class_logits = torch.randn(4, 5) * 3
    p = class_logits.softmax(1)
    collapsed = probe.collapse(class_logits).softmax(1)
    torch.testing.assert_close(collapsed[:, 0], p[:, [0, 2, 3]].sum(1))
    torch.testing.assert_close(collapsed[:, 1], p[:, [1, 4]].sum(1))


@pytest.mark.parametrize("layers", [[9, 10, 11], [4, 11], [11]])
def test_features_from_cached_tokens_are_the_features_from_pixels(layers):
    probe = _probe(layers)
    pixels = torch.randn(3, 3, 28, 28)
    start = probe.cache_start  # the block after the first one read; the last block when only the last is read
    assert start == min(layers[0] + 1, 11)
    with torch.no_grad():
        expected = probe.features(pixels)
        got = probe.features(Split(probe.backbone, start).prefix(pixels), start)
    assert expected.shape == (3, 2 * 384 * len(layers))
    torch.testing.assert_close(got, expected)
    # the last block is read after the final norm: its part of the vector is not the raw block output
    vit = probe.backbone
    with torch.no_grad():
        last = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(pixels)))))
    torch.testing.assert_close(expected[:, -768:-384], last[:, 0])


def test_pooling_with_std_adds_the_patch_tokens_spread_per_block_read():
    probe = _probe([4, 11], pooling=["std", "cls", "mean"])
    assert probe.pooling == ["cls", "mean", "std"]  # one order, whatever order they came in
    pixels = torch.randn(2, 3, 28, 28)
    vit = probe.backbone
    with torch.no_grad():
        features = probe.features(pixels)
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(pixels)))
        block4 = vit.blocks[:5](x)
        start = probe.cache_start
        cached = probe.features(Split(vit, start).prefix(pixels), start)
    assert features.shape == (2, 3 * 384 * 2) and probe.head.in_features == 3 * 384 * 2
    torch.testing.assert_close(features[:, :384], block4[:, 0])
    torch.testing.assert_close(features[:, 384:768], block4[:, 1:].mean(1))
    torch.testing.assert_close(features[:, 768:1152], block4[:, 1:].std(1))
    torch.testing.assert_close(cached, features)
    with pytest.raises(ValueError, match="pooling takes some of cls, mean, std, not max"):
        _probe([11], pooling=["max"])


def test_classes_are_one_per_source_and_label_or_plain_labels():
    rows = {"label": [0, 1, 0, 1], "source": ["b", "b", "a", "a"]}
    names, classes, class_labels = class_names(rows, "source")
    assert list(names) == ["b/fake", "b/real", "a/fake", "a/real"]
    assert classes == ["a/fake", "a/real", "b/fake", "b/real"] and class_labels == [0, 1, 0, 1]
    names, classes, class_labels = class_names(rows, "label")
    assert classes == ["fake", "real"] and class_labels == [0, 1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # As the recipe does: a CNN trained first, the probe on its splits (--splits-from), so the two share rows.
    root = tmp_path_factory.mktemp("probe")
    data = [make_image_folder(str(root / "a"), per_class=12, seed=0),
            make_image_folder(str(root / "b"), per_class=12, seed=1)]
    cache, probe, cnn = str(root / "cache"), str(root / "dinov2-probe"), str(root / "tuned-cnn")
    assert train_main(["--data", *data, "--model", "tuned-cnn", "--image-size", "28", "--width", "0.25",
                       "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--output", cnn]) == 0
    assert main(["--data", *data, *TINY, "--layers", "9", "11", "--splits-from", cnn, "--cache-dir", cache,
                 "--robustness", "jpeg_q75", "--output", probe]) == 0
    return data, cache, probe, cnn


@pytest.fixture(scope="module")
def middle(runs):
    """A second probe on the same frozen ViT, read at middle blocks with the patch tokens' spread too."""
    data, cache, probe, cnn = runs
    output = os.path.join(os.path.dirname(probe), "dinov2-probe-middle")
    assert main(["--data", *data, *TINY, "--layers", "4", "6", "--pooling", "cls", "mean", "std", "--splits-from", cnn,
                 "--cache-dir", cache, "--robustness", "jpeg_q75", "--output", output]) == 0
    return output


def _pipeline_matches_predictions(folder):
    classifier = load_pipeline(folder)
    with open(os.path.join(folder, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    reloaded = pipeline_fake_probability(classifier, [load_image(row["file"]) for row in rows])
    # Not bit-equal: the tiny fixture ViT's features vary little, so the standardised head scales them up ~1e4 times,
    # and the 1e-8 float noise between a batch of 8 (the cache) and one image (here) reached 2e-4 in P(fake) on
    # this workplace's Xeon (2026-12-07). A wrong combiner input (order, gate, member) moves it by far more.
    np.testing.assert_allclose(reloaded, [float(row["fake_probability"]) for row in rows], atol=1e-3)
    return classifier


@pytest.mark.slow
def test_a_probe_ships_a_folder_whose_pipeline_gives_its_test_figures(runs):
    _, _, probe, _ = runs
    # The test figures come from the cached features; the shipped folder, through pipeline(), must give the same.
    classifier = _pipeline_matches_predictions(probe)
    metrics = json.load(open(os.path.join(probe, "metrics.json")))
    assert metrics["model"] == "dinov2-vits14-probe" and metrics["library_name"] == "transformers"
    assert metrics["probe"]["layers"] == [9, 11]
    assert metrics["probe"]["classes"] == ["a/fake", "a/real", "b/fake", "b/real"]
    assert metrics["training"]["command"].startswith("python -m train.probe ")
    assert set(metrics["robustness"]) == {"clean", "jpeg_q75"}
    card = model_card(metrics)
    assert "custom_code" in card and "trust_remote_code=True" in card
    assert classifier.model.config.members[0]["probe"]["class_labels"] == [0, 1, 0, 1]


@pytest.mark.slow
def test_grad_cam_reads_the_probe_s_vit(runs):
    _, _, probe, _ = runs
    classifier = load_pipeline(probe)
    image = load_image(os.path.join(runs[0][0], "fake", "fake_000.jpg"))
    cam, info = explain.grad_cam_map(classifier, image)
    assert cam.shape == (28, 28) and np.isfinite(cam).all() and cam.std() > 0
    assert info["member"] == "dinov2-vits14-probe"
    assert info["fake_probability"] == pytest.approx(pipeline_fake_probability(classifier, [image])[0], abs=1e-4)


@pytest.mark.slow
def test_a_stack_over_a_probe_reads_its_cache_and_reloads(runs, tmp_path, capsys):
    data, cache, probe, cnn = runs
    capsys.readouterr()
    output = str(tmp_path / "ensemble")
    assert stack_main(["--data", *data, "--model", "ensemble", "--members", probe, cnn, "--splits-from", cnn,
                       "--cache-dir", cache, "--batch-size", "8", "--num-workers", "0", "--output", output]) == 0
    assert "cached " not in capsys.readouterr().out  # the probe's activations came from the cache train.probe filled
    classifier = _pipeline_matches_predictions(output)
    assert [m["name"] for m in classifier.model.config.members] == ["dinov2-vits14-probe", "tuned-cnn"]
    assert "probe" in classifier.model.config.members[0]



def _trained_on_a(cnn, tmp_path):
    """A copy of the CNN that says it trained on source "a" only: its gate is the probe's "a" classes."""
    narrow = str(tmp_path / "cnn-on-a")
    shutil.copytree(cnn, narrow)
    metrics = json.load(open(os.path.join(narrow, "metrics.json")))
    metrics["data"]["datasets"] = ["a"]
    json.dump(metrics, open(os.path.join(narrow, "metrics.json"), "w"))
    return narrow


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_a_gated_stack_weighs_a_member_by_the_probe_s_belief_in_its_sources(runs, tmp_path, flip):
    data, cache, probe, cnn = runs
    narrow = _trained_on_a(cnn, tmp_path)
    output = str(tmp_path / "gated")
    assert stack_main(["--data", *data, "--model", "ensemble", "--members", probe, narrow, "--splits-from", cnn,
                       "--gate", *(["--flip-tta"] if flip else []), "--cache-dir", cache, "--batch-size", "8",
                       "--num-workers", "0", "--output", output]) == 0
    classifier = _pipeline_matches_predictions(output)  # the stack's combiner inputs are the ones forward() builds
    model = classifier.model
    assert model.config.gates == [{"member": 1, "probe": 0, "classes": [0, 1]}]  # a/fake, a/real
    assert model.combiner.in_features == 2 * 2 + 2 * 2 + 1
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["gates"] == [{"member": narrow, "probe": probe, "classes": 2}]
    assert "multiplied by the probe's probability that the image comes from the sources `cnn-on-a`" in model_card(metrics)
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        x_probe, x_cnn = model.member_inputs(pixels)
        class_p = model.members[0].class_logits(x_probe).softmax(1)
        g = class_p[:, :2].sum(1, keepdim=True)
        cnn_logits = model.members[1](x_cnn)
        logits = torch.cat([model.members[0](x_probe), cnn_logits], 1)
        expected = model.combiner(torch.cat([logits, g * logits, g], 1))
        got = model(pixels).logits
    if not flip:
        torch.testing.assert_close(got, expected)
    assert ((g >= 0) & (g <= 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_a_routed_gate_learns_which_images_come_from_the_member_s_sources(runs, tmp_path, flip, capsys):
    data, cache, probe, cnn = runs
    narrow = _trained_on_a(cnn, tmp_path)
    output = str(tmp_path / "routed")
    assert stack_main(["--data", *data, "--model", "ensemble", "--members", probe, narrow, "--splits-from", cnn,
                       "--gate", "--route-members", narrow, *(["--flip-tta"] if flip else []),
                       "--cache-dir", cache, "--batch-size", "8", "--num-workers", "0", "--output", output]) == 0
    # the fixture's "a" and "b" images look alike, so its router learns little (test_stack.py fits one on scores
    # that tell them apart); here: it is fitted, saved and read by forward()
    assert re.search(r"router of .*cnn-on-a: mean g [\d.]+ on its sources' 4 validation images \(out of fold\), "
                     r"[\d.]+ on the others", capsys.readouterr().out)
    classifier = _pipeline_matches_predictions(output)  # the fitted router ships and forward() reads it
    model = classifier.model
    assert model.config.gates == [{"member": 1, "router": 0}]
    assert model.config.routers == [{"probes": [0], "sources": ["a"]}]
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["gates"] == [{"member": narrow, "router": {"probes": [probe], "sources": ["a"]}}]
    assert "for `cnn-on-a` that probability is a learned router's" in model_card(metrics)
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        x_probe, x_cnn = model.member_inputs(pixels)
        class_p = model.members[0].class_logits(x_probe).softmax(1)
        g = torch.sigmoid(model.routers[0](class_p.clamp_min(1e-30).log()))
        logits = torch.cat([model.members[0](x_probe), model.members[1](x_cnn)], 1)
        expected = model.combiner(torch.cat([logits, g * logits, g], 1))
        got = model(pixels).logits
    assert model.routers[0].weight.abs().sum() > 0  # fitted, not the 0.5 it starts at
    if not flip:
        torch.testing.assert_close(got, expected)
    # a routed member must be gated, and come from --members
    common = ["--data", *data, "--model", "ensemble", "--members", probe, narrow, "--splits-from", cnn,
              "--cache-dir", cache, "--output", str(tmp_path / "o")]
    assert stack_main([*common, "--route-members", narrow]) == 2
    assert capsys.readouterr().err == ("train.stack: error: --route-members needs --gate: a router replaces the "
                                       "gate of a gated member.\n")
    assert stack_main([*common, "--gate", "--route-members", "runs/elsewhere"]) == 2
    assert capsys.readouterr().err == (f"train.stack: error: --route-members runs/elsewhere: no member came from "
                                       f"there; the members came from {probe}, {narrow}.\n")


@pytest.mark.slow
def test_an_expert_scores_the_images_its_gate_sends_it_and_the_combiner_the_rest(runs, tmp_path, capsys):
    data, cache, probe, cnn = runs
    narrow = _trained_on_a(cnn, tmp_path)
    output = str(tmp_path / "expert")
    common = ["--data", *data, "--model", "ensemble", "--members", probe, narrow, "--splits-from", cnn, "--gate",
              "--cache-dir", cache, "--batch-size", "8", "--num-workers", "0"]
    assert stack_main([*common, "--folds", "3", "--expert-members", narrow, probe, "--expert-threshold", "0.3",
                       "--output", output]) == 0
    assert re.search(r"expert over .*cnn-on-a, .*: g > 0\.3 sends it \d+ validation images; log loss out of fold "
                     r"[\d.]+ \(the combiner alone [\d.]+\)", capsys.readouterr().out)
    classifier = _pipeline_matches_predictions(output)  # the stack's test figures, experts included, through forward()
    model = classifier.model
    (expert,) = model.config.experts
    assert expert == {"gate": 0, "members": [1, 0], "threshold": 0.3}
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["experts"] == [{"members": [narrow, probe], "gate_of": narrow, "threshold": expert["threshold"]}]
    assert (f"images whose gate of `cnn-on-a` is above {expert['threshold']} are scored by an expert instead, a "
            f"linear layer over the logits of `cnn-on-a`, `{os.path.basename(probe)}` alone") in model_card(metrics)
    pixels = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        x_probe, x_cnn = model.member_inputs(pixels)
        g = model.members[0].class_logits(x_probe).softmax(1)[:, [0, 1]].sum(1, keepdim=True)
        probe_logits, cnn_logits = model.members[0](x_probe), model.members[1](x_cnn)
        logits = torch.cat([probe_logits, cnn_logits], 1)
        combined = model.combiner(torch.cat([logits, g * logits, g], 1))
        own = model.experts[0](torch.cat([cnn_logits, probe_logits], 1))
        for threshold in (-1.0, 2.0, expert["threshold"]):  # every image to the expert, none, as shipped
            model.config.experts[0]["threshold"] = threshold
            torch.testing.assert_close(model(pixels).logits, torch.where(g > threshold, own, combined))
    assert not torch.allclose(own, combined)  # the switch changes the answer
    # an expert needs folds (its threshold is chosen out of fold) and a gated member first
    assert stack_main([*common, "--expert-members", narrow, "--output", str(tmp_path / "o")]) == 2
    assert "--expert-members needs --folds" in capsys.readouterr().err
    assert stack_main([*common, "--folds", "3", "--expert-members", probe, narrow, "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"train.stack: error: --expert-members {probe}: its member is not gated (a probe "
                                       "gates the others), so no gate can send images to the expert: name a gated "
                                       "member first.\n")


@pytest.mark.slow
def test_probes_on_one_backbone_share_it_in_the_stack_stored_once_and_run_once(runs, middle, tmp_path):
    data, cache, probe, cnn = runs
    metrics = json.load(open(os.path.join(middle, "metrics.json")))
    assert metrics["probe"]["pooling"] == ["cls", "mean", "std"]
    assert "read at blocks 4, 6 at 28×28 px (the CLS token, the patch tokens' mean, the patch tokens' standard " \
           "deviation)" in model_card(metrics)
    _pipeline_matches_predictions(middle)
    output = str(tmp_path / "shared")
    assert stack_main(["--data", *data, "--model", "ensemble", "--members", probe, middle, cnn, "--splits-from", cnn,
                       "--gate", "--cache-dir", cache, "--batch-size", "8", "--num-workers", "0", "--output",
                       output]) == 0
    # the stack read both probes from their caches; the folder's forward() (one pass through the shared ViT)
    # gives the same predictions
    classifier = _pipeline_matches_predictions(output)
    model = classifier.model
    assert model.config.members[1]["probe"]["backbone_of"] == 0 and "backbone_of" not in model.config.members[0]["probe"]
    from safetensors import safe_open
    with safe_open(os.path.join(output, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("members.0.backbone.") for k in keys)
    assert not any(k.startswith("members.1.backbone.") for k in keys) and "members.1.head.weight" in keys
    assert model.members[1].backbone is model.members[0].backbone
    # each probe alone (its own pass) gives what the shared pass gives
    separate = [FeatureProbe(spec["architecture"], spec["model_args"], spec["probe"]["layers"],
                             spec["probe"]["class_labels"], spec["probe"].get("pooling", ["cls", "mean"])).eval()
                for spec in model.config.members[:2]]
    for alone, member in zip(separate, model.members):
        alone.backbone.load_state_dict(model.members[0].backbone.state_dict())
        alone.head.load_state_dict(member.head.state_dict())
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        inputs = list(model.member_inputs(pixels))
        shared = model.member_outputs(pixels)
        for i, alone in enumerate(separate):
            torch.testing.assert_close(shared[i][0], alone(inputs[i]))
    assert [g["member"] for g in model.config.gates] == [1, 2]
    assert ("multiplied by the probe's probability that the image comes from the sources that member trained on, for "
            "each of `dinov2-probe-middle`, `tuned-cnn`") in model_card(json.load(open(os.path.join(output, "metrics.json"))))
    # Grad-CAM and the layer views see the shared ViT once, mapped before the first block either probe reads
    assert [name for name, _ in explain.members(classifier)] == [
        "dinov2-vits14-probe + dinov2-vits14-probe #2", "tuned-cnn"]
    image = load_image(os.path.join(data[0], "fake", "fake_000.jpg"))
    cam, info = explain.grad_cam_map(classifier, image)
    assert np.isfinite(cam).all() and len(info["layers"]) == 2
    assert info["layers"][0] == "dinov2-vits14-probe + dinov2-vits14-probe #2 · stage 4 (384 ch, 1/14)"  # blocks.3


def test_gating_without_a_probe_or_without_shared_sources_is_one_clear_line(runs, tmp_path, capsys):
    data, cache, probe, cnn = runs
    code = stack_main(["--data", *data, "--model", "ensemble", "--members", cnn, cnn, "--splits-from", cnn, "--gate",
                       "--output", str(tmp_path / "o")])
    assert code == 2
    assert "--gate needs a feature probe among --members" in capsys.readouterr().err
    elsewhere = str(tmp_path / "cnn-elsewhere")
    shutil.copytree(cnn, elsewhere)
    metrics = json.load(open(os.path.join(elsewhere, "metrics.json")))
    metrics["data"]["datasets"] = ["z"]
    json.dump(metrics, open(os.path.join(elsewhere, "metrics.json"), "w"))
    code = stack_main(["--data", *data, "--model", "ensemble", "--members", probe, elsewhere, "--splits-from", cnn,
                       "--gate", "--cache-dir", cache, "--output", str(tmp_path / "o")])
    assert code == 2
    assert "none of the probe's classes come from the sources" in capsys.readouterr().err

@pytest.mark.slow
def test_a_saved_ensemble_among_members_brings_its_members_weights_and_gates(runs, middle, tmp_path, capsys):
    # How a new member joins a shipped ensemble without the runs that trained the old ones: --members models/ensemble RUN
    data, cache, probe, cnn = runs
    narrow = _trained_on_a(cnn, tmp_path)
    common = ["--data", *data, "--model", "ensemble", "--splits-from", cnn, "--cache-dir", cache, "--batch-size", "8",
              "--num-workers", "0"]
    shipped, grown = str(tmp_path / "shipped"), str(tmp_path / "grown")
    assert stack_main([*common, "--members", probe, narrow, "--gate", "--output", shipped]) == 0
    assert stack_main([*common, "--members", shipped, middle, "--gate", "--output", grown]) == 0
    before, after = load_pipeline(shipped).model, _pipeline_matches_predictions(grown).model
    assert [m["source"] for m in after.config.members] == [probe, narrow, middle]
    # the narrow CNN's sources come back from the shipped ensemble's gate; the middle probe's from its metrics.json
    assert after.config.gates == [{"member": 1, "probe": 0, "classes": [0, 1]},
                                  {"member": 2, "probe": 0, "classes": [0, 1, 2, 3]}]
    assert after.config.members[2]["probe"]["backbone_of"] == 0  # still one ViT, stored and run once
    assert after.members[2].backbone is after.members[0].backbone
    for old, new in zip(before.members, after.members):
        for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items()):
            torch.testing.assert_close(b, a, msg=name)  # the members as shipped, only the combiner refitted
    assert after.combiner.in_features == 3 * 2 + 2 * (3 * 2) + 2  # logits; every logit times each g; the g
    # bench/stack_fitting.py --route: the two gated members' combiner on source "a", known, then routed by the gate
    capsys.readouterr()
    load_bench("stack_fitting").main(["--members", grown, "--splits-from", cnn, "--gate", "--folds", "2", "--route",
                                  narrow, middle, "--family", "a", "--cache-dir", cache, "--batch-size", "8"])
    out = capsys.readouterr().out
    assert f"gate of {narrow} on the family's test rows" in out
    assert "family known, a combiner of the two fitted on its 4 validation rows: a " in out
    assert out.count("routed when g > ") == 3
    # a member is replaced by leaving out the run it came from: here the narrow CNN, by the middle probe
    replaced = str(tmp_path / "replaced")
    assert stack_main([*common, "--members", grown, "--drop-members", narrow, "--gate", "--output", replaced]) == 0
    model = load_pipeline(replaced).model
    assert [m["source"] for m in model.config.members] == [probe, middle]
    assert model.config.gates == [{"member": 1, "probe": 0, "classes": [0, 1, 2, 3]}]
    capsys.readouterr()
    assert stack_main([*common, "--members", grown, "--drop-members", cnn, "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (f"train.stack: error: --drop-members {cnn}: no member came from "
                                               f"there; the members came from {probe}, {narrow}, {middle}.")
    # gating needs every member's sources: an ensemble stacked without gates does not record its CNN's
    plain = str(tmp_path / "plain")
    assert stack_main([*common, "--members", probe, cnn, "--output", plain]) == 0
    capsys.readouterr()
    assert stack_main([*common, "--members", plain, middle, "--gate", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"train.stack: error: --gate: which sources {cnn} trained on is not known (no metrics.json names "
                   "them, nor a gate of the ensemble it came from): pass the folder python -m train wrote.")


def test_a_validation_split_too_small_to_share_is_one_clear_line(tmp_path, capsys):
    data = [make_image_folder(str(tmp_path / "a"), per_class=8)]  # validation: 1 fake, 1 real; nothing to share
    probe = str(tmp_path / "probe")
    assert main(["--data", *data, *TINY, "--layers", "11", "--output", probe, "--cache-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    code = stack_main(["--data", *data, "--model", "ensemble", "--members", probe, probe, "--splits-from", probe,
                       "--output", str(tmp_path / "o")])
    assert code == 2
    assert "too small to share between fitting the combiner and calibrating it" in capsys.readouterr().err


def test_a_probe_of_a_cnn_is_one_clear_line(tmp_path, capsys):
    data = [make_image_folder(str(tmp_path / "a"), per_class=8)]
    code = main(["--data", *data, "--model", "tuned-cnn", "--output", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("train.probe: error: python -m train.probe reads a ViT")
    code = main(["--data", *data, *TINY, "--pooling", "cls", "max", "--output", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "train.probe: error: --pooling takes some of cls, mean, std, not max."


@pytest.mark.slow
def test_a_probe_over_more_sources_keeps_the_old_run_s_splits_and_computes_only_the_new_images(runs, tmp_path, capsys):
    # --splits-from with --data sources the run did not have: the old rows keep their splits (so a model on the
    # larger pool is tested on the same rows), the new source is split here, and the cache recomputes only it.
    data, cache, _, cnn = runs
    extra = make_image_folder(str(tmp_path / "c"), per_class=10, seed=2)
    output = str(tmp_path / "wider")
    capsys.readouterr()
    assert main(["--data", *data, extra, *TINY, "--layers", "9", "11", "--splits-from", cnn, "--cache-dir", cache,
                 "--robustness", "jpeg_q75", "--output", output]) == 0
    out = capsys.readouterr().out
    old = json.load(open(os.path.join(cnn, "splits.json")))["rows"]
    new = json.load(open(os.path.join(output, "splits.json")))["rows"]
    for name in ("train", "validation", "test"):
        assert new[name]["file"][:len(old[name]["file"])] == old[name]["file"]
        added = new[name]["source"][len(old[name]["file"]):]
        assert added and set(added) == {"c"}
    every = lambda rows: sorted(os.path.abspath(f) for n in rows for f in rows[n]["file"])  # noqa: E731
    assert every(new) == sorted(every(old) + [os.path.join(extra, label, f) for label in ("fake", "real")
                                              for f in os.listdir(os.path.join(extra, label))])
    copied = {name: len(old[name]["file"]) for name in old}
    for name in ("train", "validation", "test"):
        assert f"cache {name}: {copied[name]} of {len(new[name]['file'])} images copied from earlier caches" in out
        assert f"cached {name}: {len(new[name]['file']) - copied[name]} images" in out
        # The last blocks run on the new images alone too: the old rows' features are copied.
        assert re.search(rf"{name}: features of {len(new[name]['file']) - copied[name]} images in \d+ s "
                         rf"\({copied[name]} copied from earlier caches\)", out)
    _pipeline_matches_predictions(output)  # copied features give the figures the shipped folder gives


@pytest.mark.slow
def test_a_probe_on_some_of_a_run_s_sources_keeps_their_rows_in_that_run_s_splits(runs, tmp_path, capsys):
    # A specialist (here on source "a" alone) trained --splits-from a wider run: its rows are that run's rows of
    # "a", split as they were there, so no row the wider models are tested on is in its train split.
    data, cache, _, cnn = runs
    output = str(tmp_path / "on-a")
    capsys.readouterr()
    assert main(["--data", data[0], *TINY, "--layers", "9", "11", "--splits-from", cnn, "--cache-dir", cache,
                 "--robustness", "jpeg_q75", "--output", output]) == 0
    out = capsys.readouterr().out
    assert "only the --data sources' rows are kept (1 of its sources left out: b)" in out
    old = json.load(open(os.path.join(cnn, "splits.json")))["rows"]
    new = json.load(open(os.path.join(output, "splits.json")))["rows"]
    for name in ("train", "validation", "test"):
        assert new[name]["file"] == [f for f, s in zip(old[name]["file"], old[name]["source"]) if s == "a"]
        n = len(new[name]["file"])
        assert f"cache {name}: {n} of {n} images copied from earlier caches" in out  # nothing ran through the ViT
    assert json.load(open(os.path.join(output, "metrics.json")))["probe"]["classes"] == ["a/fake", "a/real"]
