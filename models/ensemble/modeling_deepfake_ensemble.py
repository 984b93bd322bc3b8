"""The ensemble detector as a transformers model: timm members + a learned combination of their logits.

A member is a timm classifier, or a *feature probe* (`FeatureProbe`): a frozen pretrained ViT read at several
blocks, a linear head over one class per (source, label) of the training data, and the probabilities of the fake
classes summed into P(fake). Summing is not linear, so no timm head can hold it; a one-member "ensemble" is how a
probe ships on its own (its combiner then only carries the calibration temperature).

This file is copied into every saved ensemble folder (`auto_map` in its config.json), so users load it with
`pipeline("image-classification", model=..., trust_remote_code=True)`. It must import nothing from this
project: only torch, timm and transformers.

Gates weigh a member by how much the image looks like its training data: a probe's summed probability of that
member's sources' classes, or a learned router over the probes' class probabilities (`DeepfakeEnsembleConfig`).
An expert takes over the images one gate is sure of: its own linear layer over a few members' logits.

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

    def __init__(self, members=None, combine="logits", pretrained_cfg=None, flip_tta=False, gates=None, routers=None,
                 experts=None, **kwargs):
        # members: [{"name", "architecture", "model_args", "data_config": {input_size, mean, std, ...}}], a feature
        # probe's with "probe": {"layers", "classes" (names), "class_labels" (each class's label: 0 fake, 1 real),
        # "pooling" (default ["cls", "mean"]), and "backbone_of": j where it reads probe j's backbone (same weights)}
        self.members = members or []
        # gates: [{"member": i, "probe": j, "classes": [k, ...]}]: g = feature probe j's summed probability of its
        # classes k (the sources member i trained on); every member's logits times g, and g, are combiner inputs
        # too: in effect one combination where the image looks like what member i learned from, another elsewhere,
        # blended by g
        # A gate may read a learned router instead of a class sum: {"member": i, "router": r} with g =
        # sigmoid(w . log p + b), p the class probabilities of the probes routers[r]["probes"] (every probe with a
        # class per source), w and b fitted by train.stack (--route-members) to tell the router's "sources" (what
        # member i trained on) from the rest. Where a probe's classes confuse a collection with its neighbours
        # (faces140k's FFHQ and StyleGAN faces with the pool's), a second probe's classes set them apart.
        self.gates = gates or []
        self.routers = routers or []  # [{"probes": [j, ...], "sources": [name, ...]}]
        # experts: [{"gate": j, "members": [i, ...], "threshold": t}]: an image whose gate j has g > t is scored by
        # a linear layer over those members' logits alone (the expert), fitted by train.stack (--expert-members) on
        # the validation images the gate sends it; the combiner scores every other image. Where a family's own
        # specialists know it best, they then decide alone on it, and the combiner's weights serve the rest.
        self.experts = experts or []
        self.combine = combine  # "logits": linear layer over the members' logits; "features": over pooled features
        self.flip_tta = flip_tta  # average the logits of the image and its mirror image (test-time augmentation)
        self.pretrained_cfg = pretrained_cfg or {}  # the ensemble's own preprocessing, read by the image processor
        super().__init__(**kwargs)


POOLINGS = ("cls", "mean", "std")
DEFAULT_POOLING = ("cls", "mean")  # what a probe's spec without "pooling" reads (the shipped probes before "std")


def pooling_order(pooling):
    """`pooling` checked against POOLINGS and put in their order (one feature layout, whatever order it came in)."""
    unknown = sorted(set(pooling) - set(POOLINGS))
    if unknown or not pooling:
        raise ValueError(f"pooling takes some of {', '.join(POOLINGS)}, not {', '.join(unknown) or 'none'}")
    return [p for p in POOLINGS if p in pooling]


class FeatureProbe(nn.Module):
    """A frozen ViT's CLS and mean patch tokens after each of `layers` (the last block's after the final norm), a
    linear head over `len(class_labels)` classes, and per label the log of its classes' summed probability:
    logits [B, 2] in label order (0 fake, 1 real), whose softmax is exactly P(fake) = sum over the fake classes.

    Why classes per source rather than one "fake" class: each source's fakes (and reals) sit in their own corner
    of the feature space, which one linear boundary cannot enclose all at once; a class each can (measured in
    bench/leave_one_source_out.py: 0.878 / AUC 0.949 against 0.806 / 0.888 for the binary head, same features)."""

    def __init__(self, architecture, model_args, layers, class_labels, pooling=DEFAULT_POOLING):
        super().__init__()
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
        self.layers = sorted(layers)
        self.pooling = pooling_order(pooling)
        self.head = nn.Linear(len(self.pooling) * self.backbone.num_features * len(self.layers), len(class_labels))
        # A plain list, not a buffer: transformers builds models on empty memory and restores only saved tensors,
        # so a non-persistent buffer would hold garbage after from_pretrained. The config carries the list.
        self.class_labels = [int(label) for label in class_labels]

    def share_backbone(self, other):
        """Read `other`'s backbone instead of an own copy (same frozen weights): held outside this module's
        parameters, so a saved ensemble stores it once."""
        del self.backbone
        self.__dict__["backbone"] = other.backbone

    @property
    def cache_start(self):
        """The first block `features` runs on cached tokens: the one after the first layer read, or the last block
        when only the last is read (a cache holds the output of some block before the last)."""
        return min(self.layers[0] + 1, len(self.backbone.blocks) - 1)

    def block_tokens(self, x, layers, start=0):
        """{block: its output tokens (the last block's after the final norm)} for each of `layers`, from pixels
        (`start` 0) or from the tokens block `start - 1` put out."""
        vit = self.backbone
        if start == 0:
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        last, tokens = len(vit.blocks) - 1, {}
        for i in range(start - 1, max(layers) + 1):
            if i >= start:
                x = vit.blocks[i](x)
            if i in layers:
                tokens[i] = vit.norm(x) if i == last else x
        return tokens

    def pool(self, tokens):
        """[B, features] from `block_tokens`' output: per layer read, the CLS token and the patch tokens' mean (and
        their standard deviation: how much texture varies across the face, where generator artefacts show)."""
        parts = []
        for i in self.layers:
            patches = tokens[i][:, self.backbone.num_prefix_tokens:]
            pooled = {"cls": tokens[i][:, 0], "mean": patches.mean(1)}
            if "std" in self.pooling:
                pooled["std"] = patches.std(1)
            parts += [pooled[p] for p in self.pooling]
        return torch.cat(parts, 1)

    def features(self, x, start=0):
        """[B, len(pooling) * dim * len(layers)] from pixels (`start` 0) or from the tokens block `start - 1` put out."""
        return self.pool(self.block_tokens(x, self.layers, start))

    def collapse(self, class_logits):
        """Per label, the log-sum-exp of its classes' logits: softmax of the result = summed class probabilities."""
        return torch.stack([class_logits[:, [i for i, c in enumerate(self.class_labels) if c == label]].logsumexp(1)
                            for label in range(max(self.class_labels) + 1)], 1)

    def class_logits(self, x, start=0, tokens=None):
        """[B, classes]: the head's logits, one per (source, label) class (from `block_tokens`' output if given)."""
        return self.head(self.pool(tokens) if tokens is not None else self.features(x, start))

    def forward(self, x, start=0):
        return self.collapse(self.class_logits(x, start))


def build_member(spec, num_labels):
    """A member module from its spec in the config: a FeatureProbe where the spec has "probe", else timm's."""
    if "probe" in spec:
        return FeatureProbe(spec["architecture"], spec["model_args"], spec["probe"]["layers"],
                            spec["probe"]["class_labels"], spec["probe"].get("pooling", DEFAULT_POOLING))
    return timm.create_model(spec["architecture"], pretrained=False, num_classes=num_labels, **spec["model_args"])


class DeepfakeEnsembleImageProcessor(TimmWrapperImageProcessor):
    """timm's eval transform built from the ensemble's `pretrained_cfg` in config.json (as for timm models)."""


def average_of(layer, n, k):
    """Set a linear layer over n members' k logits each (and any inputs after them) to their plain average."""
    with torch.no_grad():
        layer.weight.zero_()  # inputs past the members' logits (gates) start at 0: the fit decides their worth
        layer.weight[:, :n * k].copy_(torch.cat([torch.eye(k)] * n, dim=1) / n)
        layer.bias.zero_()


class DeepfakeEnsembleForImageClassification(PreTrainedModel):
    config_class = DeepfakeEnsembleConfig
    main_input_name = "pixel_values"
    base_model_prefix = "ensemble"
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        self.members = nn.ModuleList(build_member(m, config.num_labels) for m in config.members)
        for i, member in enumerate(self.members):
            owner = self.backbone_owner(i)
            if owner not in (None, i):
                member.share_backbone(self.members[owner])
        if config.combine == "features":
            if any("probe" in m for m in config.members):
                raise ValueError("combine='features' needs timm members: a feature probe gives its logits only.")
            width = sum(member.num_features for member in self.members)
        else:
            width = (config.num_labels * len(self.members) + 1) * (1 + len(config.gates)) - 1
        self.combiner = nn.Linear(width, config.num_labels)
        self.routers = nn.ModuleList(nn.Linear(sum(len(self.members[j].class_labels) for j in router["probes"]), 1)
                                     for router in config.routers)
        self.experts = nn.ModuleList(nn.Linear(config.num_labels * len(expert["members"]), config.num_labels)
                                     for expert in config.experts)
        self.post_init()

    def _init_weights(self, module):
        # Members keep timm's own initialisation (their trained weights are loaded over it anyway). The logits
        # combiner, and each expert, starts as the plain average of its members' logits.
        if module is getattr(self, "combiner", None) and self.config.combine == "logits":
            average_of(module, len(self.members), self.config.num_labels)
        for expert, spec in zip(getattr(self, "experts", []), self.config.experts):
            if module is expert:
                average_of(module, len(spec["members"]), self.config.num_labels)
        if isinstance(module, nn.Linear) and any(module is router for router in getattr(self, "routers", [])):
            with torch.no_grad():  # g = 0.5 everywhere until train.stack fits the router
                module.weight.zero_()
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

    def member_output(self, i, x, tokens=None):
        """Member i's logits on its input, and its class probabilities where it is a feature probe that gates
        (`tokens`: a probe's backbone's `block_tokens` of x, when an earlier pass computed them)."""
        member = self.members[i]
        if not isinstance(member, FeatureProbe):
            return member(x), None
        class_logits = member.class_logits(x, tokens=tokens)
        return member.collapse(class_logits), class_logits.softmax(1) if i in self.gating_probes() else None

    def gating_probes(self):
        """The probes whose class probabilities some gate or router reads."""
        return {gate["probe"] for gate in self.config.gates if "probe" in gate} | {
            j for router in self.config.routers for j in router["probes"]}

    def router_features(self, r, probe_probabilities):
        """[B, classes]: router r's input, the log class probabilities of its probes (floored at 1e-30, where
        float32's softmax runs out)."""
        return torch.cat([probe_probabilities[j].clamp_min(1e-30).log() for j in self.config.routers[r]["probes"]], 1)

    def gate_value(self, gate, probe_probabilities):
        """[B, 1]: g of one gate, its probe's summed probability of its classes, or its router's belief."""
        if "router" in gate:
            r = gate["router"]
            return torch.sigmoid(self.routers[r](self.router_features(r, probe_probabilities)))
        return probe_probabilities[gate["probe"]][:, gate["classes"]].sum(1, keepdim=True)

    def backbone_owner(self, i):
        """The member whose backbone probe i reads (itself unless it shares an earlier probe's); None for others."""
        spec = self.config.members[i]
        return spec["probe"].get("backbone_of", i) if "probe" in spec else None

    def member_outputs(self, pixel_values):
        """Every member's `member_output` on the ensemble's input. Probes that share a backbone see the same input
        (models.create_ensemble checks), so one pass through it gives every block they read."""
        owners = [self.backbone_owner(i) for i in range(len(self.members))]
        reads = {j: sorted({layer for i, owner in enumerate(owners) if owner == j for layer in self.members[i].layers})
                 for j in set(owners) - {None}}
        tokens, outputs = {}, []
        for i, x in enumerate(self.member_inputs(pixel_values)):
            j = owners[i]
            if j is not None and j not in tokens:
                tokens[j] = self.members[j].block_tokens(x, reads[j])
            outputs.append(self.member_output(i, x, tokens.get(j)))
        return outputs

    def combiner_input(self, member_logits, probe_probabilities):
        """[B, combiner inputs]: every member's logits, then per gate those logits times g, and g."""
        logits = torch.cat(list(member_logits), dim=1)
        columns = [logits]
        for gate in self.config.gates:
            g = self.gate_value(gate, probe_probabilities)
            columns += [g * logits, g]
        return torch.cat(columns, dim=1)

    def expert_logits(self, logits, member_logits, probe_probabilities):
        """`logits` with every image an expert's gate sends it (g > its threshold) scored by that expert instead."""
        for expert, spec in zip(self.experts, self.config.experts):
            g = self.gate_value(self.config.gates[spec["gate"]], probe_probabilities)
            own = expert(torch.cat([member_logits[i] for i in spec["members"]], dim=1))
            logits = torch.where(g > spec["threshold"], own, logits)
        return logits

    def forward(self, pixel_values, labels=None, return_dict=None, **kwargs):
        n = pixel_values.shape[0]
        if self.config.flip_tta:
            # One pass over a batch of 2n: the images, then their mirror images. Faces are left-right symmetric
            # in what matters here, so averaging the two is a cheap, label-preserving ensemble of its own.
            pixel_values = torch.cat([pixel_values, pixel_values.flip(-1)])
        if self.config.combine == "features":
            inputs = torch.cat([member.forward_head(member.forward_features(x), pre_logits=True)
                                for member, x in zip(self.members, self.member_inputs(pixel_values))], dim=1)
        else:
            outputs = self.member_outputs(pixel_values)
            member_logits = [logits for logits, _ in outputs]
            probs = {i: p for i, (_, p) in enumerate(outputs) if p is not None}
            inputs = self.combiner_input(member_logits, probs)
        logits = self.combiner(inputs)
        if self.config.experts:
            logits = self.expert_logits(logits, member_logits, probs)
        if self.config.flip_tta:
            logits = (logits[:n] + logits[n:]) / 2
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
