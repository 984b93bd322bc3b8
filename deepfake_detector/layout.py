"""Save a trained detector as a ready Hub repo folder.

Tuned CNN and Xception use timm's Hub layout (`config.json` with architecture / model_args / pretrained_cfg /
label_names, and `model.safetensors`), which both `pipeline("image-classification")` (transformers' timm
wrapper) and `timm.create_model("hf-hub:…")` load without remote code. The ensemble is a transformers model
whose modeling file travels in the folder (`auto_map`), loaded with `trust_remote_code=True`.

Safetensors only: no pickle file is ever written.
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from deepfake_detector.images import ID2LABEL
from deepfake_detector.modeling_deepfake_ensemble import DeepfakeEnsembleForImageClassification

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
MODELING_FILE = "modeling_deepfake_ensemble.py"


def write_json(path, data):
    """Every JSON file the project writes (metrics, configs, splits, reports): indented, newline-terminated."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")


def save_model(model, folder, *, dtype=torch.float32):
    """Write config + weights (+ preprocessing, + modeling file for the ensemble) into `folder`."""
    os.makedirs(folder, exist_ok=True)
    if isinstance(model, DeepfakeEnsembleForImageClassification):
        save_ensemble(model, folder, dtype=dtype)
    else:
        save_timm(model, folder, dtype=dtype)
    return folder


def save_timm(model, folder, *, dtype=torch.float32):
    save_config_for_hf(
        model, os.path.join(folder, CONFIG),
        model_config={"label_names": [ID2LABEL[i] for i in sorted(ID2LABEL)]},
        model_args=dict(model.model_args),
    )
    config_path = os.path.join(folder, CONFIG)
    with open(config_path) as f:
        config = json.load(f)
    # timm 1.0.31 adds num_classes to model_args; transformers' timm wrapper passes num_classes itself and then
    # fails with "multiple values for keyword argument 'num_classes'".
    config["model_args"].pop("num_classes", None)
    # Weights may be stored in half precision to keep the repo small; the model still runs in float32.
    config["dtype"] = "float32"
    write_json(config_path, config)
    _save_weights(model.state_dict(), os.path.join(folder, WEIGHTS), dtype)


def save_ensemble(model, folder, *, dtype=torch.float32):
    model.config.architectures = [type(model).__name__]
    model.config.auto_map = {
        "AutoConfig": f"{MODELING_FILE[:-3]}.DeepfakeEnsembleConfig",
        "AutoModelForImageClassification": f"{MODELING_FILE[:-3]}.DeepfakeEnsembleForImageClassification",
        "AutoImageProcessor": f"{MODELING_FILE[:-3]}.DeepfakeEnsembleImageProcessor",
    }
    model.config.dtype = "float32"
    model.config.save_pretrained(folder)
    _save_weights(model.state_dict(), os.path.join(folder, WEIGHTS), dtype)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), MODELING_FILE), os.path.join(folder, MODELING_FILE))
    # The image processor reads the ensemble's pretrained_cfg from config.json, as timm's does.
    write_json(os.path.join(folder, PREPROCESSOR), {"image_processor_type": "DeepfakeEnsembleImageProcessor",
                                                    "auto_map": {"AutoImageProcessor": model.config.auto_map[
                                                        "AutoImageProcessor"]}})


def _save_weights(state_dict, path, dtype):
    tensors = {
        name: (t.to(dtype) if t.is_floating_point() else t).detach().contiguous().clone()
        for name, t in state_dict.items()
    }
    save_file(tensors, path, metadata={"format": "pt"})
