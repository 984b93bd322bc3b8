"""train.cached: a ViT's frozen blocks cached once, the rest trained over the cache, the whole network shipped.

    python -m pytest tests/test_cached.py

The DINOv2 ViT-S/14 layout at 28 px (2×2 patches): real depth and width, few tokens, so a run takes seconds.
"""

import csv
import json
import os

import numpy as np
import pytest
import torch

from deepfake_detector.images import load_image
from deepfake_detector.inference import load_pipeline, pipeline_fake_probability
from deepfake_detector.models import create_model
from helpers import make_image_folder
from train.cached import Split, main

TINY = ["--model", "dinov2-vits14", "--image-size", "28", "--epochs", "1", "--batch-size", "8", "--num-workers", "0",
        "--robustness", "jpeg_q75"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [make_image_folder(str(root / "a"), per_class=8, seed=0), make_image_folder(str(root / "b"), per_class=8, seed=1)]


def _model():
    torch.manual_seed(0)
    return create_model("dinov2-vits14", image_size=28).eval()


def test_the_split_model_is_the_whole_model():
    model = _model()
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = model(pixels)
        split = Split(model, 10)
        torch.testing.assert_close(split(split.prefix(pixels)), expected)
        probe = Split(model, 10, head_only=True)
        torch.testing.assert_close(probe(probe.frozen_suffix(probe.prefix(pixels))), expected)


def test_only_the_blocks_after_the_cut_train_and_head_only_trains_the_norm_and_head():
    trained = {name for name, p in Split(_model(), 10).named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in trained} == {"blocks", "norm", "head"}
    assert {n.split(".")[2] for n in trained if n.startswith("model.blocks.")} == {"10", "11"}
    probe = {name for name, p in Split(_model(), 10, head_only=True).named_parameters() if p.requires_grad}
    assert probe == {"model.norm.weight", "model.norm.bias", "model.head.weight", "model.head.bias"}


def _pipeline_matches_predictions(folder):
    classifier = load_pipeline(folder)
    with open(os.path.join(folder, "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    reloaded = pipeline_fake_probability(classifier, [load_image(row["file"]) for row in rows])
    np.testing.assert_allclose(reloaded, [float(row["fake_probability"]) for row in rows], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("head_only", [False, True])
def test_a_cached_run_ships_a_model_whose_pipeline_gives_the_cached_figures(data, tmp_path, capsys, head_only):
    # The test figures come from the cache; the shipped folder, scored through pipeline(), must give the same.
    cache = str(tmp_path / "cache")
    output = str(tmp_path / "vit")
    argv = ["--data", *data, *TINY, "--cache-dir", cache, "--output", output] + (["--head-only"] if head_only else [])
    assert main(argv) == 0
    assert "cached train" in capsys.readouterr().out
    _pipeline_matches_predictions(output)
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["training"]["command"].startswith("python -m train.cached ")
    assert set(metrics["robustness"]) == {"clean", "jpeg_q75"}
    # A second run over the same rows reuses the cache: nothing is computed again.
    assert main(argv + ["--output", str(tmp_path / "again")]) == 0
    assert "cached train" not in capsys.readouterr().out


def test_a_non_vit_model_is_one_clear_line(data, tmp_path, capsys):
    code = main(["--data", *data, "--model", "tuned-cnn", "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train.cached: error: python -m train.cached trains ViT models")


def _rows(paths):
    import datasets

    return datasets.Dataset.from_dict({"image": [{"bytes": None, "path": p} for p in paths],
                                       "label": [0] * len(paths), "source": ["a"] * len(paths)})


def test_the_cache_reuses_rows_cached_before_and_keys_the_jpeg_re_encoding(data, tmp_path, capsys):
    from deepfake_detector.models import data_config_of
    from train.cached import cached_activations
    from train.data import ImageDataset

    split = Split(_model(), 10).eval()
    config = data_config_of(split.model)
    paths = sorted(os.path.join(data[0], "fake", f) for f in os.listdir(os.path.join(data[0], "fake")))
    cache = str(tmp_path / "cache")
    first = np.array(cached_activations(split, _rows(paths[:5]), config, cache, "a", 4, 0))
    assert "cached a: 5 images" in capsys.readouterr().out
    # A split holding those five and three more: the five are copied, only the three run through the blocks.
    wider = np.array(cached_activations(split, _rows(paths[3:] + paths[:3]), config, cache, "b", 4, 0))
    out = capsys.readouterr().out
    assert "cache b: 5 of 8 images copied from earlier caches" in out and "cached b: 3 images" in out
    np.testing.assert_allclose(wider[5:], first[:3])
    np.testing.assert_allclose(wider[:2], first[3:])
    with torch.no_grad():
        expected = split.prefix(torch.stack([ImageDataset(_rows(paths[5:8]), config)[i][0] for i in range(3)]))
    np.testing.assert_allclose(wider[2:5], expected.numpy(), atol=1e-5)
    # --reencode-jpeg: another cache (nothing copied from the plain one), of the re-encoded images.
    encoded = np.array(cached_activations(split, _rows(paths[:2]), config, cache, "c", 4, 0, reencode=50))
    assert "copied" not in capsys.readouterr().out
    with torch.no_grad():
        expected = split.prefix(torch.stack([ImageDataset(_rows(paths[:2]), config, reencode_quality=50)[i][0]
                                             for i in range(2)]))
    np.testing.assert_allclose(encoded, expected.numpy(), atol=1e-5)
    assert np.abs(encoded - first[:2]).max() > 1e-3
