"""All three model kinds through the local Hub: push, download into a fresh cache, load as a user would."""

import json
import os

import numpy as np
import pytest
import timm
import torch
from transformers import pipeline

from deepfake_detector.inference import load_pipeline, pipeline_fake_probability, verdict
from deepfake_detector.models import load_timm_member
from tests.helpers import TINY_THRESHOLDS, face_like, make_tiny_models
from train.data import eval_transform

NAMES = ("tuned-cnn", "xception", "ensemble")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return make_tiny_models(str(tmp_path_factory.mktemp("tiny-models")))


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(7)
    return [face_like(rng, 160, fake=i % 2 == 1) for i in range(4)]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_gives_the_same_probabilities(tiny_models, images, hub_roundtrip, name):
    local = pipeline_fake_probability(load_pipeline(tiny_models[name]), images)
    snapshot, repo_id = hub_roundtrip(tiny_models[name])
    pulled = pipeline_fake_probability(load_pipeline(snapshot), images)
    np.testing.assert_allclose(pulled, local, atol=1e-6)
    assert np.ptp(local) > 1e-6  # the outputs depend on the image
    files = set(os.listdir(snapshot))
    assert {"config.json", "model.safetensors", "README.md", "metrics.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)


def test_pipeline_by_repo_id_and_revision_as_users_call_it(tiny_models, images, hub_roundtrip, hf_cache):
    """`pipeline(model="user/name")` for timm models; the ensemble with trust_remote_code and a pinned sha."""
    _, cnn_id = hub_roundtrip(tiny_models["tuned-cnn"])
    classifier = pipeline("image-classification", model=cnn_id)
    out = classifier(images[0])
    assert {o["label"] for o in out} == {"fake", "real"} and sum(o["score"] for o in out) == pytest.approx(1, abs=1e-6)
    # The thresholds travel with the model through the Hub: one call gives a user the app's verdict.
    assert classifier.model.config.verdict_thresholds == TINY_THRESHOLDS
    p_fake = next(o["score"] for o in out if o["label"] == "fake")
    assert verdict(out, classifier.model.config) == verdict(p_fake, TINY_THRESHOLDS)

    from huggingface_hub import HfApi

    _, ensemble_id = hub_roundtrip(tiny_models["ensemble"])
    sha = HfApi().model_info(ensemble_id).sha
    ensemble = pipeline("image-classification", model=ensemble_id, trust_remote_code=True, revision=sha)
    local = load_pipeline(tiny_models["ensemble"])
    assert ensemble(images[1])[0] == pytest.approx(local(images[1])[0])
    assert ensemble.model.config.verdict_thresholds == TINY_THRESHOLDS


@pytest.mark.parametrize("name", ["tuned-cnn", "xception"])
def test_timm_users_load_with_hf_hub_prefix(tiny_models, images, hub_roundtrip, name):
    _, repo_id = hub_roundtrip(tiny_models[name])
    model = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
    reference = load_timm_member(tiny_models[name]).eval()
    config = json.load(open(os.path.join(tiny_models[name], "config.json")))["pretrained_cfg"]
    x = eval_transform(config)(images[0])[None]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
