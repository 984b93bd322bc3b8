"""Tiny images and tiny models for the tests: nothing here reads ../shared or the network."""

import json
import os

import numpy as np
import torch
from PIL import Image

from deepfake_detector.layout import save_model
from deepfake_detector.models import create_ensemble, create_model


def face_like(rng, size=160, fake=False):
    """A small synthetic image: smooth blobs, plus high-frequency noise for the 'fake' class (learnable)."""
    coarse = rng.rand(size // 20, size // 20, 3)
    image = np.kron(coarse, np.ones((20, 20, 1))) * 200
    if fake:
        image += rng.rand(size, size, 3) * 50
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def make_image_folder(root, per_class=10, size=160, seed=0):
    """`root/real/*.jpg` and `root/fake/*.jpg`, each image distinct."""
    rng = np.random.RandomState(seed)
    for label in ("real", "fake"):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for i in range(per_class):
            face_like(rng, size, fake=label == "fake").save(os.path.join(root, label, f"{label}_{i:03d}.jpg"), quality=92)
    return str(root)


TINY_THRESHOLDS = {"fake": 0.6, "real": 0.4, "target_precision": 0.95}
TINY_METRICS = {"thresholds": TINY_THRESHOLDS, "labels": {"0": "fake", "1": "real"}}


def make_tiny_models(root, seed=0):
    """Untrained but complete tuned-cnn, xception and ensemble folders (Hub layout, thresholds in config.json,
    metrics.json), as training writes them.

    Batch-norm statistics and the final layers are randomised so the outputs depend on the input (a fresh
    model's near-constant 0.5 would hide bugs).
    """
    torch.manual_seed(seed)
    folders = {}
    for name, kwargs in (("tuned-cnn", {"width": 0.25, "image_size": 48}), ("xception", {"width": 0.125, "image_size": 64})):
        model = create_model(name, **kwargs)
        _randomise(model)
        folders[name] = save_model(model.eval(), os.path.join(root, name), thresholds=TINY_THRESHOLDS)
    ensemble = create_ensemble([folders["tuned-cnn"], folders["xception"]])
    with torch.no_grad():
        ensemble.combiner.weight.add_(torch.randn_like(ensemble.combiner.weight) * 0.5)
    folders["ensemble"] = save_model(ensemble.eval(), os.path.join(root, "ensemble"), thresholds=TINY_THRESHOLDS)
    for name, folder in folders.items():
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump({"model": name, **TINY_METRICS}, f)
    return folders


def _randomise(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        classifier = model.get_classifier()
        classifier.weight.normal_(0, 1.0)
