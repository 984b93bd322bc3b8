"""Tests of explain.py: LIME, Grad-CAM, conv stages, feature maps and layer overlays on tiny models.

    python -m pytest tests/test_explain.py -q -p no:cacheprovider

Tiny untrained tuned-cnn (48 px), xception (64 px) and ensemble folders are built once for the module and loaded
through `load_pipeline`, as the app loads its models.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from deepfake_detector import explain
from deepfake_detector.layout import save_model
from deepfake_detector.models import create_ensemble
from helpers import face_like, make_tiny_models
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability

KINDS = ("tuned-cnn", "xception", "ensemble")
# (model, member): the ensemble is explained as a whole and per member, by index and by name.
EXPLAINED = [("tuned-cnn", None), ("xception", None), ("ensemble", None), ("ensemble", 0), ("ensemble", "xception")]
TUNED_STAGES = ["stem (64 ch, 1/2)", "stage 1 (8 ch, 1/4)", "stage 2 (16 ch, 1/8)", "stage 3 (32 ch, 1/16)",
                "stage 4 (64 ch, 1/32)"]
XCEPTION_STAGES = ["stem (16 ch, 1/2)", "stage 1 (32 ch, 1/4)", "stage 2 (88 ch, 1/8)", "stage 3 (128 ch, 1/16)",
                   "stage 4 (256 ch, 1/32)"]
EXPECTED_STAGES = {
    "tuned-cnn": TUNED_STAGES,
    "xception": XCEPTION_STAGES,
    "ensemble": [f"tuned-cnn · {s}" for s in TUNED_STAGES] + [f"xception · {s}" for s in XCEPTION_STAGES],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("explain-models"))


@pytest.fixture(scope="module")
def classifiers(folders):
    return {name: load_pipeline(folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def flip_tta_ensemble(folders, tmp_path_factory):
    """The tiny ensemble again, saved with flip_tta on: its saved config must bring the setting back."""
    ensemble = create_ensemble([folders["tuned-cnn"], folders["xception"]], flip_tta=True)
    ensemble.combiner.load_state_dict(load_pipeline(folders["ensemble"]).model.combiner.state_dict())
    return load_pipeline(save_model(ensemble.eval(), str(tmp_path_factory.mktemp("tta") / "ensemble")))


@pytest.fixture(scope="module")
def image():
    """Not square, so the overlays must keep the upload's aspect while the model sees a centre crop."""
    return face_like(np.random.RandomState(0), 160, fake=True).resize((200, 150))


@pytest.fixture(scope="module")
def other_image():
    return face_like(np.random.RandomState(1), 160, fake=False).resize((200, 150))


def assert_rgb(picture, size=None):
    assert isinstance(picture, Image.Image) and picture.mode == "RGB"
    pixels = np.asarray(picture)
    assert pixels.dtype == np.uint8 and pixels.std() > 0, "blank image"
    if size is not None:
        assert picture.size == size


def stages_of(classifier, member):
    names = list(explain.conv_stages(classifier))
    return [n for n in names if n.startswith(f"{member} · ")] if isinstance(member, str) else names


# ---------------------------------------------------------------------------------------------------------
# Stages, feature maps, layer overlays


@pytest.mark.parametrize("kind", KINDS)
def test_conv_stages_names(classifiers, kind):
    assert list(explain.conv_stages(classifiers[kind])) == EXPECTED_STAGES[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_conv_stage_names_match_the_activations(classifiers, image, kind):
    """The channels and reduction in each name are what the layer really outputs."""
    classifier = classifiers[kind]
    _, pixel_values, _ = explain.model_input(classifier, image)
    activations = explain._activations(classifier, pixel_values, list(explain.conv_stages(classifier)))
    for name, activation in activations.items():
        channels, reduction = name.rsplit("(", 1)[1].rstrip(")").split(" ch, 1/")
        member_input = 48 if name.startswith("tuned-cnn") or kind == "tuned-cnn" else 64
        assert activation.shape[0] == int(channels), name
        assert activation.shape[-1] == -(-member_input // int(reduction)), name


@pytest.mark.parametrize("kind", ("tuned-cnn", "xception"))
def test_conv_stages_without_feature_info_finds_the_same_stages(classifiers, kind, monkeypatch):
    classifier = classifiers[kind]
    monkeypatch.setattr(classifier.model.timm_model, "feature_info", None)
    assert list(explain.conv_stages(classifier)) == EXPECTED_STAGES[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_feature_maps_every_layer(classifiers, image, kind):
    classifier = classifiers[kind]
    for name in explain.conv_stages(classifier):
        channels = int(name.rsplit("(", 1)[1].split(" ch")[0])
        # 16 tiles: 4 x 4 grid beside a 356 px input; 8 channels (tuned-cnn stage 1): 3 x 3 beside 266 px
        assert_rgb(explain.feature_maps(classifier, image, name), (672, 390) if channels >= 16 else (506, 300))


def test_feature_maps_top_k_and_unknown_layer(classifiers, image):
    classifier = classifiers["xception"]
    assert_rgb(explain.feature_maps(classifier, image, XCEPTION_STAGES[2], top_k=4), (340, 210))
    with pytest.raises(ValueError, match=r"Unknown layer 'layer4': choose one of 'stem \(16 ch, 1/2\)'"):
        explain.feature_maps(classifier, image, "layer4")


@pytest.mark.parametrize("kind, member", EXPLAINED)
def test_layer_overlay(classifiers, image, kind, member):
    classifier = classifiers[kind]
    if member is None:  # every stage: one row (input + 5 stages) per model or ensemble member
        rows = 2 if kind == "ensemble" else 1
        assert_rgb(explain.layer_overlay(classifier, image), (6 * 166 - 6, rows * 198 - 6))
    else:
        assert_rgb(explain.layer_overlay(classifier, image, stages_of(classifier, member)[-2:]), (3 * 166 - 6, 192))


# ---------------------------------------------------------------------------------------------------------
# LIME


@pytest.mark.parametrize("kind", KINDS)
def test_lime_overlay_and_info(classifiers, image, kind):
    classifier = classifiers[kind]
    calls = []
    overlay, info = explain.lime_explanation(classifier, image, num_samples=20, num_features=5,
                                             progress=lambda fraction, desc: calls.append((fraction, desc)))
    assert_rgb(overlay, image.size)
    assert info["samples"] == 20 and 5 <= info["segments"] <= 2 * explain.LIME_SEGMENTS
    assert info["model_input"] == ([48, 48] if kind == "tuned-cnn" else [64, 64])
    assert 0 < info["seconds"] < 60 and len(info["weights"]) == 5
    assert all(np.isfinite(w) for w in info["weights"].values())
    # LIME's unperturbed sample is exactly what the pipeline scores
    assert info["fake_probability"] == pytest.approx(pipeline_fake_probability(classifier, [image])[0], abs=1e-4)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("20/20 perturbed images" in desc for _, desc in calls)


def test_lime_dims_what_the_model_does_not_see(classifiers, image):
    """The 200 x 150 upload is centre-cropped to 150 x 150: the 25 px side strips are washed out, not coloured."""
    classifier = classifiers["xception"]
    assert explain.seen_box(classifier, image.size) == (25, 0, 175, 150)
    overlay = np.asarray(explain.lime_explanation(classifier, image, num_samples=20)[0], dtype=np.float32)
    original = np.asarray(image, dtype=np.float32)
    np.testing.assert_allclose(overlay[:, :25], 0.4 * original[:, :25] + 120, atol=1)
    np.testing.assert_allclose(overlay[:, 175:], 0.4 * original[:, 175:] + 120, atol=1)


class HalfImageModel(torch.nn.Module):
    """Says "fake" in proportion to the fine texture of one half of its input and ignores the other half."""

    def __init__(self, side, reference):
        super().__init__()
        self.side = side
        self.reference = reference

    def texture(self, pixel_values):
        half = pixel_values.shape[-1] // 2
        part = pixel_values[..., :half] if self.side == "left" else pixel_values[..., half:]
        return (part[..., 1:] - part[..., :-1]).abs().mean((1, 2, 3))

    def forward(self, pixel_values):
        fake = 4 * (self.texture(pixel_values) / self.reference - 0.5)
        return SimpleNamespace(logits=torch.stack([fake, torch.zeros_like(fake)], dim=1))


@pytest.mark.parametrize("side", ("left", "right"))
def test_lime_finds_the_half_the_model_looks_at(classifiers, image, side):
    processor = classifiers["xception"].image_processor
    _, pixel_values, _ = explain.model_input(classifiers["xception"], image)
    model = HalfImageModel(side, reference=1.0)
    model.reference = float(model.texture(pixel_values))
    segments, weights, info = explain.lime_attribution(SimpleNamespace(model=model, image_processor=processor), image)
    attribution = np.abs(np.array([weights[s] for s in range(len(weights))]))[segments]
    half = segments.shape[1] // 2
    looked_at = attribution[:, :half] if side == "left" else attribution[:, half:]
    assert looked_at.sum() / attribution.sum() > 0.8
    assert info["samples"] == explain.LIME_SAMPLES and info["fake_probability"] > 0.8


def test_lime_restricted_to_a_region_perturbs_and_colours_only_inside_it(classifiers, image):
    """The model looks at the left half only; explaining just the right half must find nothing there, and the
    left half is then neither perturbed (every weight ~0) nor coloured (washed out like outside the crop)."""
    classifier = classifiers["xception"]
    processor = classifier.image_processor
    _, pixel_values, _ = explain.model_input(classifier, image)
    model = HalfImageModel("left", reference=1.0)
    model.reference = float(model.texture(pixel_values))
    stand_in = SimpleNamespace(model=model, image_processor=processor)
    right_half = (100, 0, 200, 150)  # the model sees x 25..175 of the 200 x 150 image: its right half is 100..175
    segments, weights, info = explain.lime_attribution(stand_in, image, region=right_half)
    assert info["region"] == "face" and len(weights) == info["segments"] and 5 <= info["segments"] <= 30
    outside = segments == info["segments"]
    assert outside[:, : segments.shape[1] // 2].all() and not outside[:, -1].any()
    assert max(abs(w) for w in weights.values()) < 1e-6
    everywhere = explain.lime_attribution(stand_in, image)[1]
    assert max(abs(w) for w in everywhere.values()) > 0.01  # the same model, unrestricted: the left half matters

    overlay = np.asarray(explain.lime_explanation(stand_in, image, region=right_half)[0], dtype=np.float32)
    original = np.asarray(image, dtype=np.float32)
    np.testing.assert_allclose(overlay[:, :100], 0.4 * original[:, :100] + 120, atol=1)


def test_lime_fit_is_lime_s_weighted_ridge():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    rng = np.random.RandomState(1)
    kept = rng.randint(0, 2, (64, 20)).astype(float)
    kept[0] = 1
    target = rng.rand(64)
    distance = pairwise_distances(kept, kept[:1], metric="cosine").ravel()
    weight = np.sqrt(np.exp(-distance ** 2 / 0.25 ** 2))
    ridge = Ridge(alpha=1.0).fit(kept, target, sample_weight=weight)
    coefficients, r2 = explain._lime_fit(kept, target)
    np.testing.assert_allclose(coefficients, ridge.coef_, atol=1e-10)
    assert r2 == pytest.approx(ridge.score(kept, target, sample_weight=weight), abs=1e-10)


@pytest.mark.parametrize("seconds_per_sample, samples", [
    (0.007, 64),           # tuned-cnn: 714 would fit, the default stays at 64
    (5.0 / 64, 64),        # exactly 64 fit
    (0.111, 45),           # DINOv2 ViT-S/14 batch-1: floor(5 / 0.111)
    (0.125, 40),
    (0.25, 20),            # exactly the minimum
    (0.5, 20),             # 10 would fit: the minimum, over the budget
])
def test_lime_budget_gives_the_samples_that_fit_clamped_to_20_and_64(seconds_per_sample, samples):
    assert explain.budgeted_samples(seconds_per_sample) == samples


def test_lime_budget_follows_the_budget():
    assert [explain.budgeted_samples(0.25, budget_s=b) for b in (2.0, 10.0, 20.0)] == [20, 40, 64]


def write_json(path, value):
    import json

    path.write_text(json.dumps(value))
    return path


def test_lime_timing_table_gives_each_model_its_default_and_an_untimed_one_the_global_default(tmp_path):
    path = write_json(tmp_path / "lime_timing.json", {
        "budget_s": 5.0, "machine": "2 cores", "date": "2027-01-02", "models": {
            "dinov2": {"seconds_per_sample": 0.125, "samples": 40, "p50_s": 8.0, "measured_at_samples": 64, "runs": 5},
            "tuned-cnn": {"seconds_per_sample": 0.007, "samples": 64, "p50_s": 0.45, "measured_at_samples": 64},
            "broken": {"samples": 30}}})  # no time: treated as untimed
    timing = explain.read_lime_timing(path)
    assert (timing["budget_s"], timing["machine"], timing["date"]) == (5.0, "2 cores", "2027-01-02")
    assert sorted(timing["models"]) == ["dinov2", "tuned-cnn"]
    assert [explain.default_lime_samples(timing, n) for n in ("dinov2", "tuned-cnn", "broken", "xception")] == [
        40, 64, explain.LIME_SAMPLES, explain.LIME_SAMPLES]


def test_lime_timing_samples_follow_the_file_s_budget_not_a_stale_count(tmp_path):
    path = write_json(tmp_path / "lime_timing.json", {"budget_s": 2.5, "models": {
        "dinov2": {"seconds_per_sample": 0.125, "samples": 40, "p50_s": 8.0, "measured_at_samples": 64}}})
    assert explain.default_lime_samples(explain.read_lime_timing(path), "dinov2") == 20


def test_lime_timing_in_the_first_format_is_one_model_timed_at_its_count(tmp_path):
    path = write_json(tmp_path / "lime_timing.json", {
        "samples": 64, "model": "ensemble", "p50_s": 9.6, "p95_s": 10.1, "runs": 3, "machine": "2 cores",
        "measured_by": "python bench/bench_app.py", "date": "2026-12-01"})
    timing = explain.read_lime_timing(path)
    assert timing["models"] == {"ensemble": {"measured_at_samples": 64, "p50_s": 9.6, "p95_s": 10.1, "runs": 3,
                                             "seconds_per_sample": 0.15, "samples": 33}}
    assert timing["machine"] == "2 cores" and timing["budget_s"] == explain.LIME_BUDGET_S


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]", "{}"])
def test_a_missing_or_unreadable_lime_timing_times_no_model(tmp_path, content):
    path = tmp_path / "lime_timing.json"
    if content is not None:
        path.write_text(content)
    timing = explain.read_lime_timing(path)
    assert timing["models"] == {} and explain.default_lime_samples(timing, "ensemble") == explain.LIME_SAMPLES


def test_the_committed_lime_timing_is_readable_and_times_the_ensemble():
    from pathlib import Path

    timing = explain.read_lime_timing(Path(__file__).resolve().parent.parent / "bench" / "lime_timing.json")
    assert "ensemble" in timing["models"] and timing["machine"]
    for entry in timing["models"].values():
        assert explain.LIME_MIN_SAMPLES <= entry["samples"] <= explain.LIME_SAMPLES


# ---------------------------------------------------------------------------------------------------------
# Grad-CAM


@pytest.mark.parametrize("kind, member", EXPLAINED)
def test_grad_cam(classifiers, image, other_image, kind, member):
    classifier = classifiers[kind]
    overlay, info = explain.grad_cam(classifier, image, member=member)
    assert overlay.size == image.size and overlay.mode == "RGB"
    first, _ = explain.grad_cam_map(classifier, image, member=member)
    second, _ = explain.grad_cam_map(classifier, other_image, member=member)
    side = 48 if kind == "tuned-cnn" else 64
    assert first.shape == second.shape == (side, side)
    assert np.isfinite(first).all() and first.std() > 0, "constant map"
    # The tiny untrained xception's last stage barely depends on its input (its P(fake) moves in the 5th
    # decimal between any two images), so for it the bound sits just above float32 noise.
    least_change = 1e-5 if "xception" in (kind, member) else 0.1
    assert np.abs(first - second).max() > least_change * np.abs(first).max(), "the map ignores the image"
    assert info["fake_probability"] == pytest.approx(pipeline_fake_probability(classifier, [image])[0], abs=1e-4)
    expected = {None: "all members" if kind == "ensemble" else "model", 0: "tuned-cnn", "xception": "xception"}
    assert info["member"] == expected[member]


def test_grad_cam_ensemble_is_the_sum_of_its_members(classifiers, image):
    ensemble = classifiers["ensemble"]
    combined, info = explain.grad_cam_map(ensemble, image)
    parts = [explain.grad_cam_map(ensemble, image, member=m)[0] for m in ("tuned-cnn", 1)]
    np.testing.assert_allclose(combined, parts[0] + parts[1], rtol=1e-4, atol=1e-5)
    assert info["layers"] == ["tuned-cnn · stage 4 (64 ch, 1/32)", "xception · stage 4 (256 ch, 1/32)"]


def test_flip_tta_averages_the_image_and_its_mirror(classifiers, flip_tta_ensemble, image):
    plain, tta = classifiers["ensemble"], flip_tta_ensemble
    assert tta.model.config.flip_tta and not plain.model.config.flip_tta
    x = explain.model_input(plain, image)[1]
    with torch.inference_mode():
        expected = (plain.model(x).logits + plain.model(x.flip(-1)).logits) / 2
        torch.testing.assert_close(tta.model(x).logits, expected, rtol=1e-5, atol=1e-5)
    assert pipeline_fake_probability(tta, [image])[0] != pytest.approx(pipeline_fake_probability(plain, [image])[0])


def test_grad_cam_with_flip_tta_adds_the_mirrored_pass_back(classifiers, flip_tta_ensemble, image):
    """log-odds = mean over the two passes, so the map is the mean of the image's map and the mirror image's
    map mirrored back; feature maps show the image itself, not its mirror."""
    plain, tta = classifiers["ensemble"], flip_tta_ensemble
    image = image.resize((160, 160))  # square: a centre crop of an odd margin would shift the mirror by a pixel
    mirrored = ImageOps.mirror(image)
    expected = (explain.grad_cam_map(plain, image)[0] + explain.grad_cam_map(plain, mirrored)[0][:, ::-1]) / 2
    np.testing.assert_allclose(explain.grad_cam_map(tta, image)[0], expected, rtol=1e-4, atol=1e-5)
    layer = EXPECTED_STAGES["ensemble"][2]
    np.testing.assert_array_equal(np.asarray(explain.feature_maps(tta, image, layer)),
                                  np.asarray(explain.feature_maps(plain, image, layer)))


def test_grad_cam_member_errors(classifiers, image):
    with pytest.raises(ValueError, match="member= applies to the ensemble only"):
        explain.grad_cam(classifiers["xception"], image, member=0)
    with pytest.raises(ValueError, match=r"Unknown member 'resnet': choose an index below 2 or one of "
                                         r"\['tuned-cnn', 'xception'\]"):
        explain.grad_cam(classifiers["ensemble"], image, member="resnet")


def test_grad_cam_inside_inference_mode(classifiers, image):
    """The app may run its handlers under torch.inference_mode(); Grad-CAM still gets its gradients."""
    with torch.inference_mode():
        cam, _ = explain.grad_cam_map(classifiers["tuned-cnn"], image)
    np.testing.assert_allclose(cam, explain.grad_cam_map(classifiers["tuned-cnn"], image)[0], rtol=1e-5, atol=1e-6)


def test_how_to_read_has_two_lines_per_view():
    assert set(explain.HOW_TO_READ) == {"lime", "grad_cam", "feature_maps"}
    assert all(len(text.splitlines()) == 2 for text in explain.HOW_TO_READ.values())


def test_grad_cam_of_a_vit_weighs_the_patch_tokens_of_its_last_block_but_one(tmp_path):
    # A ViT pooled on its CLS token: the last block's patch tokens never reach the head (zero gradient), so
    # Grad-CAM reads the block before, its tokens laid out as the patch grid.
    from deepfake_detector.models import create_model

    torch.manual_seed(0)
    folder = save_model(create_model("dinov2-vits14", image_size=56).eval(), str(tmp_path / "vit"))
    classifier = load_pipeline(folder)
    cam, info = explain.grad_cam_map(classifier, face_like(np.random.RandomState(0), 80))
    assert cam.shape == (56, 56) and np.isfinite(cam).all() and np.abs(cam).max() > 0
    assert info["layers"] == ["stage 11 (384 ch, 1/14)"]  # blocks.10, the last block but one
    overlay, _ = explain.grad_cam(classifier, face_like(np.random.RandomState(0), 80))
    assert overlay.size == (80, 80)
