"""Save a trained detector as a ready Hub repo folder.

Tuned CNN and Xception use timm's Hub layout (`config.json` with architecture / model_args / pretrained_cfg /
label_names, and `model.safetensors`), which both `pipeline("image-classification")` (transformers' timm
wrapper) and `timm.create_model("hf-hub:…")` load without remote code. The ensemble is a transformers model
whose modeling file travels in the folder (`auto_map`), loaded with `trust_remote_code=True`. Every folder also
carries the face-cropping image processor (processing_deepfake_faces.py + faces.py, `auto_map`): with
`trust_remote_code=True` a whole photo is scored on its largest face, as in the app; without, a timm folder
gets transformers' plain timm processor and should be given a face crop.

Every folder's config.json also carries the model's verdict thresholds (`"verdict_thresholds"`, chosen on
validation at training time), so they travel with the model: `set_thresholds(folder)` writes them into a
folder saved without them, from its metrics.json. Safetensors only: no pickle file is ever written.
"""

import json
import os
import shutil

from deepfake_detector.images import ID2LABEL, DataError

# torch, timm, safetensors and the ensemble's modeling file are imported in the functions that save weights:
# reading a folder (THRESHOLDS_KEY, read_json) is what the app does at start-up, and it should not wait ~10 s
# for them.

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
MODELING_FILE = "modeling_deepfake_ensemble.py"
# The face-cropping image processor and the face code it uses travel in every folder (`auto_map`), so a
# `pipeline(..., trust_remote_code=True)` caller passing a whole photo gets the face the app would score.
PROCESSING_FILES = ("processing_deepfake_faces.py", "faces.py")
FACE_PROCESSOR = "processing_deepfake_faces.DeepfakeFaceImageProcessor"
THRESHOLDS_KEY = "verdict_thresholds"  # in config.json: {"fake", "real", "target_precision", "validation_precision"}


def write_json(path, data):
    """Every JSON file the project writes (metrics, configs, splits, reports): indented, newline-terminated."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")


def read_json(path):
    """A JSON file as a dict; {} when there is no such file."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def save_model(model, folder, *, dtype=None, thresholds=None):
    """Write config + weights (+ the face-cropping image processor, + modeling file for the ensemble) into
    `folder`, the weights in `dtype` (default torch.float32); with `thresholds` ({"fake", "real", ...} on
    P(fake)) config.json carries the verdict rule too."""
    from deepfake_detector.modeling_deepfake_ensemble import DeepfakeEnsembleForImageClassification

    os.makedirs(folder, exist_ok=True)
    if isinstance(model, DeepfakeEnsembleForImageClassification):
        save_ensemble(model, folder, dtype=dtype)
    else:
        save_timm(model, folder, dtype=dtype)
    add_face_processor(folder)
    if thresholds is not None:
        set_thresholds(folder, thresholds)
    return folder


def set_thresholds(folder, thresholds=None):
    """Write verdict thresholds into `folder`/config.json (default: the "thresholds" of its metrics.json).

    The one call that makes a folder trained before thresholds travelled with the model carry them:
    `python -m hub set-thresholds FOLDER`. Returns the thresholds written.
    """
    config_path = os.path.join(folder, CONFIG)
    if not os.path.isfile(config_path):
        raise DataError(f"{folder} has no {CONFIG}: pass a model folder written by python -m train.")
    if thresholds is None:
        thresholds = read_json(os.path.join(folder, "metrics.json")).get("thresholds")
        if not thresholds:
            raise DataError(f"{folder} has no thresholds in metrics.json: choose them with python -m train.evaluate "
                            f"--model {folder} --refit-thresholds.")
    thresholds = check_thresholds(thresholds, where=folder)
    with open(config_path) as f:
        config = json.load(f)
    config[THRESHOLDS_KEY] = thresholds
    write_json(config_path, config)
    return thresholds


def check_thresholds(thresholds, where="the thresholds"):
    """`thresholds` as written into config.json, if 0 ≤ real ≤ fake ≤ 1 on P(fake)."""
    try:
        fake, real = float(thresholds["fake"]), float(thresholds["real"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: verdict thresholds need numbers 'fake' and 'real' (P(fake) cut-offs), got "
                        f"{thresholds!r}.") from None
    if not 0.0 <= real <= fake <= 1.0:
        raise DataError(f"{where}: verdict thresholds must satisfy 0 ≤ real ({real}) ≤ fake ({fake}) ≤ 1.")
    return {**thresholds, "fake": fake, "real": real}


def save_timm(model, folder, *, dtype=None):
    from timm.models._hub import save_config_for_hf

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


def save_ensemble(model, folder, *, dtype=None):
    model.config.architectures = [type(model).__name__]
    model.config.auto_map = {
        "AutoConfig": f"{MODELING_FILE[:-3]}.DeepfakeEnsembleConfig",
        "AutoModelForImageClassification": f"{MODELING_FILE[:-3]}.DeepfakeEnsembleForImageClassification",
    }
    model.config.dtype = "float32"
    model.config.save_pretrained(folder)
    _save_weights(model.state_dict(), os.path.join(folder, WEIGHTS), dtype)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), MODELING_FILE), os.path.join(folder, MODELING_FILE))


def add_face_processor(folder):
    """Make `folder`'s image processor the face-cropping one: copy processing_deepfake_faces.py and faces.py in
    and name it in config.json's `auto_map` (where timm checkpoints look) and, for a transformers model such
    as the ensemble, in preprocessor_config.json. It reads the model's pretrained_cfg from config.json, as
    timm's processor does. Also brings a folder saved before the processor travelled up to date."""
    config_path = os.path.join(folder, CONFIG)
    config = read_json(config_path)
    if not config:
        raise DataError(f"{folder} has no {CONFIG}: pass a model folder written by python -m train.")
    for name in PROCESSING_FILES:
        shutil.copyfile(os.path.join(os.path.dirname(__file__), name), os.path.join(folder, name))
    config["auto_map"] = {**config.get("auto_map", {}), "AutoImageProcessor": FACE_PROCESSOR}
    write_json(config_path, config)
    if "architecture" not in config:  # a transformers model (the ensemble), which reads preprocessor_config.json
        write_json(os.path.join(folder, PREPROCESSOR), {"image_processor_type": FACE_PROCESSOR.split(".")[1],
                                                        "auto_map": {"AutoImageProcessor": FACE_PROCESSOR}})


def _save_weights(state_dict, path, dtype=None):
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    tensors = {
        name: (t.to(dtype) if t.is_floating_point() else t).detach().contiguous().clone()
        for name, t in state_dict.items()
    }
    save_file(tensors, path, metadata={"format": "pt"})
