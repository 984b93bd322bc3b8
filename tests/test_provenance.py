"""Provenance: what a file says about itself, on real artefacts made here — C2PA credentials signed with c2pa's
Builder and a certificate this test makes, a tampered and a corrupt copy, A1111 and ComfyUI PNG chunks, XMP and
EXIF — read back through deepfake_detector.provenance.

    python -m pytest tests/test_provenance.py
"""

import json

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.images import DataError
from deepfake_detector.provenance import NOTHING, TRUST_ANCHORS_ENV, read_provenance
from helpers import face_like, provenance_files

SIGNER = "Test Signer (Test Generator Inc)"
UNTRUSTED_AI = (f"Content credentials signed by {SIGNER} say this image was created by an AI model (claim generator: "
                "TestDiffusion 1.0). The signature matches the image, but the certificate is not in a known trust "
                "list, so who signed is not verified.")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return provenance_files(str(tmp_path_factory.mktemp("provenance")), face_like(np.random.RandomState(0), 160))


@pytest.fixture(scope="module")
def files(made):
    return made[0]


@pytest.fixture(scope="module")
def root_pem(made):
    return made[1][2]


def codes(p):
    return [s["code"] for s in p.details["validation_status"]]


@pytest.mark.parametrize("name", ["c2pa-ai.jpg", "c2pa-ai.png"])
def test_signed_credentials_name_signer_generator_and_say_untrusted(files, name):
    p = read_provenance(files[name])
    assert (p.kind, p.hint, p.strength, p.signature) == ("c2pa", "ai-generated", "moderate", "untrusted")
    assert (p.generator, p.signer, p.summary) == ("TestDiffusion 1.0", SIGNER, UNTRUSTED_AI)
    assert p.details["validation_state"] == "Valid" and codes(p) == ["signingCredential.untrusted"]
    assert p.details["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert p.details["signature_info"]["common_name"] == "Test Signer"
    assert p.label == "AI-generated · signed, certificate not trusted · TestDiffusion 1.0"


def test_a_trusted_root_makes_the_signature_valid_and_strong(files, root_pem, tmp_path, monkeypatch):
    p = read_provenance(files["c2pa-ai.jpg"], trust_anchors=root_pem)
    assert (p.signature, p.strength, p.details["validation_state"], codes(p)) == ("valid", "strong", "Trusted", [])
    assert p.summary == (f"Content credentials signed by {SIGNER}, a trusted certificate, say this image was created "
                         "by an AI model (claim generator: TestDiffusion 1.0).")
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(root_pem)
    monkeypatch.setenv(TRUST_ANCHORS_ENV, str(anchors))
    assert read_provenance(files["c2pa-ai.jpg"]).signature == "valid"


def test_signed_camera_credentials_say_camera(files):
    p = read_provenance(files["c2pa-camera.jpg"])
    assert (p.hint, p.signature, p.generator) == ("camera", "untrusted", "Test Camera Firmware 2.1")
    assert "say this image was captured by a digital camera" in p.summary


def test_tampered_pixels_fail_validation(files, root_pem):
    for anchors in (None, root_pem):  # trusted or not, changed pixels are "invalid"
        p = read_provenance(files["c2pa-tampered.jpg"], trust_anchors=anchors)
        state = p.details["validation_state"]
        assert (p.kind, p.signature, p.strength, state) == ("c2pa", "invalid", "weak", "Invalid")
        assert "assertion.dataHash.mismatch" in codes(p)
    assert p.summary == (f"Content credentials signed by {SIGNER} are present but fail validation: the image was "
                         "changed after it was signed. They say this image was created by an AI model (claim "
                         "generator: TestDiffusion 1.0), but that cannot be relied on.")


def test_a_corrupt_manifest_is_a_clear_message_not_a_crash(files):
    p = read_provenance(files["c2pa-corrupt.jpg"])
    assert (p.kind, p.hint, p.signature, p.strength) == ("c2pa", "unknown", "invalid", "weak")
    assert p.summary == ("The file carries content credentials that cannot be read (Verify: unexpected end of "
                         "file): they are damaged or forged, so they say nothing reliable.")


@pytest.mark.parametrize("name, kind, where", [("a1111.png", "png-parameters", "a PNG text chunk"),
                                               ("a1111.jpg", "exif", "the EXIF data")])
def test_a1111_generation_parameters(files, name, kind, where):
    p = read_provenance(files[name])
    assert (p.kind, p.hint, p.strength, p.signature) == (kind, "ai-generated", "moderate", "none")
    assert p.generator == "Stable Diffusion web UI (v1-5-pruned-emaonly)"
    assert p.summary == (f"The file carries Stable Diffusion generation parameters in {where} (model "
                         "v1-5-pruned-emaonly, seed 1234567, sampler DPM++ 2M Karras): a generation tool wrote this, "
                         "cameras never do. Unsigned: easily added or removed.")
    assert p.details == {"prompt": "portrait photo of a woman, detailed skin", "Steps": "30",
                         "Sampler": "DPM++ 2M Karras", "CFG scale": "7", "Seed": "1234567", "Size": "512x512",
                         "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly"}


def test_comfyui_workflow(files):
    p = read_provenance(files["comfyui.png"])
    assert (p.kind, p.hint, p.generator) == ("comfyui", "ai-generated", "ComfyUI (sd_xl_base_1.0.safetensors)")
    assert p.details == {"models": ["sd_xl_base_1.0.safetensors"], "node_types": ["CheckpointLoaderSimple", "KSampler"],
                         "has_workflow": True}


def test_xmp_digital_source_type(files):
    p = read_provenance(files["xmp-ai.jpg"])
    assert (p.kind, p.hint, p.strength, p.generator) == ("xmp", "ai-generated", "moderate", "Imagen 3")
    assert p.summary.startswith("The file's XMP metadata (IPTC digital source type trainedAlgorithmicMedia) says "
                                "this image was created by an AI model.")


def test_exif_editor_first_then_the_camera(files):
    p = read_provenance(files["exif-camera.jpg"])
    assert (p.kind, p.hint, p.strength, p.generator) == ("exif", "edited", "weak", "Adobe Photoshop 25.0")
    assert [(o.hint, o.generator) for o in p.others] == [("camera", "NIKON CORPORATION NIKON Z 6")]


def test_nothing_stated_proves_nothing(files):
    p = read_provenance(files["plain.jpg"])
    assert (p.kind, p.hint, p.strength, p.signature, p.summary) == ("none", "unknown", "none", "none", NOTHING)
    assert p.label == "nothing stated"


def test_bytes_path_and_opened_image_agree(files):
    with open(files["c2pa-ai.jpg"], "rb") as f:
        from_bytes = read_provenance(f.read())
    assert from_bytes.summary == read_provenance(Image.open(files["c2pa-ai.jpg"])).summary == UNTRUSTED_AI


def test_decoded_pixels_alone_cannot_carry_credentials(files):
    pixels = Image.fromarray(np.asarray(Image.open(files["c2pa-ai.jpg"])))
    p = read_provenance(pixels)
    assert p.kind == "none" and p.summary.startswith("Only the decoded pixels were given, not the file")


def test_the_result_is_plain_json(files):
    p = read_provenance(files["exif-camera.jpg"])
    assert json.loads(json.dumps(p.as_dict()))["others"][0]["kind"] == "exif"
    assert json.loads(json.dumps(read_provenance(files["c2pa-tampered.jpg"]).as_dict()))["signature"] == "invalid"


def test_not_an_image_gets_one_sentence(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"^notes\.txt is not an image this app can read"):
        read_provenance(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match=r"^The file is empty \(0 bytes\)"):
        read_provenance(b"")
