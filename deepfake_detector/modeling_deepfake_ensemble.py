"""The ensemble detector as a transformers model: timm members + a learned combination of their logits.

This file is copied into every saved ensemble folder (`auto_map` in its config.json), so users load it with
`pipeline("image-classification", model=..., trust_remote_code=True)`. It must import nothing from this
project: only torch, timm and transformers.

Each member sees the image at its own input size and normalisation: the pipeline hands over one tensor
(normalised with the ensemble's mean/std at the largest member size), and `forward` resizes and
re-normalises it per member.
"""

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.timm_wrapper.image_processing_timm_wrapper import TimmWrapperImageProcessor


class DeepfakeEnsembleConfig(PretrainedConfig):
    model_type = "deepfake_ensemble"

    def __init__(self, members=None, combine="logits", pretrained_cfg=None, flip_tta=False, **kwargs):
        # members: [{"name", "architecture", "model_args", "data_config": {input_size, mean, std, ...}}]
        self.members = members or []
        self.combine = combine  # "logits": linear layer over the members' logits; "features": over pooled features
        self.flip_tta = flip_tta  # average the logits of the image and its mirror image (test-time augmentation)
        self.pretrained_cfg = pretrained_cfg or {}  # the ensemble's own preprocessing, read by the image processor
        super().__init__(**kwargs)


class DeepfakeEnsembleImageProcessor(TimmWrapperImageProcessor):
    """timm's eval transform built from the ensemble's `pretrained_cfg` in config.json (as for timm models)."""


class DeepfakeEnsembleForImageClassification(PreTrainedModel):
    config_class = DeepfakeEnsembleConfig
    main_input_name = "pixel_values"
    base_model_prefix = "ensemble"
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        self.members = nn.ModuleList(
            timm.create_model(m["architecture"], pretrained=False, num_classes=config.num_labels, **m["model_args"])
            for m in config.members
        )
        if config.combine == "features":
            width = sum(member.num_features for member in self.members)
        else:
            width = config.num_labels * len(self.members)
        self.combiner = nn.Linear(width, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        # Members keep timm's own initialisation (their trained weights are loaded over it anyway). The logits
        # combiner starts as the plain average of the members' logits.
        if module is getattr(self, "combiner", None) and self.config.combine == "logits":
            n, k = len(self.members), self.config.num_labels
            with torch.no_grad():
                module.weight.copy_(torch.cat([torch.eye(k)] * n, dim=1) / n)
                module.bias.zero_()

    def member_inputs(self, pixel_values):
        """The ensemble's input, resized and re-normalised for each member."""
        mean = pixel_values.new_tensor(self.config.pretrained_cfg["mean"]).view(1, -1, 1, 1)
        std = pixel_values.new_tensor(self.config.pretrained_cfg["std"]).view(1, -1, 1, 1)
        raw = pixel_values * std + mean
        for spec in self.config.members:
            cfg = spec["data_config"]
            size = tuple(cfg["input_size"][-2:])
            x = raw if tuple(raw.shape[-2:]) == size else F.interpolate(
                raw, size=size, mode="bilinear", align_corners=False, antialias=True)
            yield (x - x.new_tensor(cfg["mean"]).view(1, -1, 1, 1)) / x.new_tensor(cfg["std"]).view(1, -1, 1, 1)

    def forward(self, pixel_values, labels=None, return_dict=None, **kwargs):
        n = pixel_values.shape[0]
        if self.config.flip_tta:
            # One pass over a batch of 2n: the images, then their mirror images. Faces are left-right symmetric
            # in what matters here, so averaging the two is a cheap, label-preserving ensemble of its own.
            pixel_values = torch.cat([pixel_values, pixel_values.flip(-1)])
        parts = []
        for member, x in zip(self.members, self.member_inputs(pixel_values)):
            if self.config.combine == "features":
                parts.append(member.forward_head(member.forward_features(x), pre_logits=True))
            else:
                parts.append(member(x))
        logits = self.combiner(torch.cat(parts, dim=1))
        if self.config.flip_tta:
            logits = (logits[:n] + logits[n:]) / 2
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
