"""The core's inference: thresholds travel in config.json, the verdict helper for pipeline() users, the detector.

    python -m pytest tests/test_inference.py
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from deepfake_detector.images import DataError
from deepfake_detector.inference import (fake_probability, load_detectors, load_pipeline, pipeline_fake_probability,
                                         thresholds_of, verdict)
from deepfake_detector.faces import crop_face, detect_faces
from deepfake_detector.layout import FACE_PROCESSOR, PROCESSING_FILES, set_thresholds
from helpers import TINY_THRESHOLDS, face_like, make_tiny_models

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.mark.parametrize("name", ["tuned-cnn", "xception", "ensemble"])
def test_pipeline_keeps_the_thresholds_of_config_json(tiny_models, name):
    # transformers' timm wrapper config and the ensemble's PretrainedConfig both keep the extra key.
    classifier = pipeline("image-classification", model=tiny_models[name], trust_remote_code=name == "ensemble")
    assert classifier.model.config.verdict_thresholds == TINY_THRESHOLDS
    assert thresholds_of(classifier.model.config) == {"fake": 0.6, "real": 0.4}


def test_verdict_from_the_pipeline_output_and_config_in_one_call(tiny_models):
    classifier = load_pipeline(tiny_models["xception"])
    images = [face_like(np.random.RandomState(i), 100, fake=i % 2 == 1) for i in range(6)]
    for image, p in zip(images, pipeline_fake_probability(classifier, images)):
        expected = "fake" if p >= 0.6 else "real" if p <= 0.4 else "uncertain"
        assert verdict(classifier(image), classifier.model.config) == expected
        assert verdict(classifier(image, top_k=1), classifier.model.config) == expected  # one label is enough
    config = json.load(open(os.path.join(tiny_models["xception"], "config.json")))
    assert verdict(0.6, config) == "fake" and verdict(0.41, config) == "uncertain" and verdict(0.4, config) == "real"


def test_verdict_without_thresholds_says_how_to_add_them(tiny_models):
    with pytest.raises(DataError) as error:
        verdict(0.7, {"architecture": "resnet18"})
    assert str(error.value) == ("The model's config has no verdict_thresholds: write them into its folder with python "
                                "-m hub set-thresholds FOLDER, or pass {'fake': ..., 'real': ...}.")
    with pytest.raises(DataError, match="Not a fake/real prediction"):
        fake_probability([{"label": "cat", "score": 1.0}])


def test_set_thresholds_copies_metrics_json_thresholds_into_config_json(tiny_models, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_models["tuned-cnn"], folder)
    config = json.loads((folder / "config.json").read_text())
    del config["verdict_thresholds"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"thresholds": {"fake": 0.7, "real": 0.2, "target_precision": 0.95}}))
    assert set_thresholds(folder) == {"fake": 0.7, "real": 0.2, "target_precision": 0.95}
    assert json.loads((folder / "config.json").read_text())["verdict_thresholds"]["fake"] == 0.7
    assert load_detectors({"run": str(folder)})["run"].thresholds == {"fake": 0.7, "real": 0.2}

    (folder / "metrics.json").write_text("{}")
    with pytest.raises(DataError) as error:
        set_thresholds(folder)
    assert str(error.value) == (f"{folder} has no thresholds in metrics.json: choose them with python -m train.evaluate "
                                f"--model {folder} --refit-thresholds.")
    with pytest.raises(DataError, match=r"must satisfy 0 ≤ real \(0.9\) ≤ fake \(0.1\) ≤ 1"):
        set_thresholds(folder, {"fake": 0.1, "real": 0.9})


def test_a_folder_without_thresholds_serves_without_uncertain(tiny_models, tmp_path, caplog):
    folder = tmp_path / "old"
    shutil.copytree(tiny_models["tuned-cnn"], folder)
    config = json.loads((folder / "config.json").read_text())
    del config["verdict_thresholds"]
    (folder / "config.json").write_text(json.dumps(config))
    detector = load_detectors({"old": str(folder)})["old"]
    assert detector.thresholds == {"fake": 0.5, "real": 0.5}
    assert f"python -m hub set-thresholds {folder}" in caplog.text


SHIPPED = sorted(entry["name"] for entry in json.load(open(os.path.join(os.path.dirname(EXAMPLES), "models",
                                                                       "models.json")))["models"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_carry_their_thresholds_in_config_json(name):
    folder = os.path.join(os.path.dirname(EXAMPLES), "models", name)
    config = json.load(open(os.path.join(folder, "config.json")))
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert config["verdict_thresholds"] == metrics["thresholds"]
    assert 0 <= config["verdict_thresholds"]["real"] <= config["verdict_thresholds"]["fake"] <= 1


def test_every_shipped_ensemble_or_probe_carries_the_cores_modeling_file():
    root = os.path.dirname(EXAMPLES)
    core = open(os.path.join(root, "deepfake_detector", "modeling_deepfake_ensemble.py")).read()
    carried = [name for name in SHIPPED
               if os.path.isfile(os.path.join(root, "models", name, "modeling_deepfake_ensemble.py"))]
    assert "ensemble" in carried
    for name in carried:
        assert open(os.path.join(root, "models", name, "modeling_deepfake_ensemble.py")).read() == core, name


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_carries_the_cores_face_processor(name):
    root = os.path.dirname(EXAMPLES)
    for file in PROCESSING_FILES:
        shipped = open(os.path.join(root, "models", name, file)).read()
        assert shipped == open(os.path.join(root, "deepfake_detector", file)).read(), f"models/{name}/{file} is stale"
    config = json.load(open(os.path.join(root, "models", name, "config.json")))
    assert config["auto_map"]["AutoImageProcessor"] == FACE_PROCESSOR


@pytest.mark.parametrize("name", ["xception", "ensemble"])
def test_a_whole_photo_through_pipeline_gets_the_verdict_of_the_apps_face_crop(tiny_models, name):
    # A pipeline() caller with trust_remote_code gets the folder's face-cropping processor: the largest face,
    # cropped as the app crops it, not the whole photo squeezed into the model's input.
    photo = Image.open(os.path.join(EXAMPLES, "two-faces.jpg")).convert("RGB")  # the larger of two faces
    faces = detect_faces(photo)
    assert faces, "the example photo should show a face"
    crop = crop_face(photo, faces[0].box)
    whole = pipeline("image-classification", model=tiny_models[name], trust_remote_code=True)
    assert type(whole.image_processor).__name__ == "DeepfakeFaceImageProcessor" and whole.image_processor.crop_faces
    app = load_pipeline(tiny_models[name])  # the project's path: crops handed over, the processor's crop off
    assert not app.image_processor.crop_faces
    pixels = whole.image_processor(photo, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, app.image_processor(crop, return_tensors="pt")["pixel_values"])
    assert not torch.allclose(pixels, app.image_processor(photo, return_tensors="pt")["pixel_values"])
    p_whole = pipeline_fake_probability(whole, [photo])[0]
    assert p_whole == pytest.approx(pipeline_fake_probability(app, [crop])[0], abs=1e-6)
    # Without remote code a timm folder falls back to transformers' plain timm processor (no crop), no prompt.
    if name == "xception":
        plain = pipeline("image-classification", model=tiny_models[name])
        assert type(plain.image_processor).__name__ == "TimmWrapperImageProcessor"


def test_detector_scores_every_face_at_its_thresholds(tiny_models):
    from deepfake_detector.inference import score_faces

    detector = load_detectors({"xception": tiny_models["xception"]})["xception"]
    scored = score_faces(detector, Image.open(os.path.join(EXAMPLES, "two-faces.jpg")).convert("RGB"))
    assert scored.face_count == 2 and scored.thresholds == {"fake": 0.6, "real": 0.4}
    assert scored.verdicts == [verdict(p, scored.thresholds) for p in scored.p_fake]
    assert scored.worst == max(scored.p_fake)


def test_hub_cli_writes_thresholds_into_each_folder(tiny_models, tmp_path, capsys):
    from hub.__main__ import main

    folder = tmp_path / "run"
    shutil.copytree(tiny_models["xception"], folder)
    (folder / "metrics.json").write_text(json.dumps({"thresholds": {"fake": 0.81, "real": 0.3}}))
    assert main(["set-thresholds", str(folder)]) == 0
    assert capsys.readouterr().out == f"{folder}/config.json: fake if P(fake) ≥ 0.81, real if ≤ 0.30\n"
    assert main(["set-thresholds", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (f"hub: error: {tmp_path / 'missing'} has no config.json: pass a model folder "
                                       "written by python -m train.\n")
