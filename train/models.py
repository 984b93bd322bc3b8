"""What only training does to a model: which parameters learn, and folding the calibration temperature in.

The models themselves (specs, creation, the ensemble) are the core's: `deepfake_detector.models`.
"""

import torch

from deepfake_detector.modeling_deepfake_ensemble import DeepfakeEnsembleForImageClassification


def classifier_of(model):
    """The final linear layer: where the calibration temperature is folded in."""
    if isinstance(model, DeepfakeEnsembleForImageClassification):
        return model.combiner
    return model.get_classifier()


def trainable_parameters(model, train_members=False):
    """All parameters; for an ensemble only the combiner unless its members are trained jointly."""
    if isinstance(model, DeepfakeEnsembleForImageClassification) and not train_members:
        for member in model.members:
            member.requires_grad_(False)
        return list(model.combiner.parameters())
    return [p for p in model.parameters() if p.requires_grad]


def fold_temperature(model, temperature):
    """Divide the final layer (and an ensemble's experts, which replace it on some images) by T, so the saved model
    outputs calibrated probabilities directly."""
    for layer in [classifier_of(model), *getattr(model, "experts", [])]:
        with torch.no_grad():
            layer.weight.div_(temperature)
            layer.bias.div_(temperature)
    return model
