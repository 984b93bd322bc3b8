"""Tiny images and tiny models for the tests: nothing here reads ../shared or the network."""

import importlib.util
import json
import os

import numpy as np
import torch
from PIL import Image

from deepfake_detector.layout import save_model
from deepfake_detector.models import create_ensemble, create_model


def load_bench(name):
    """bench/NAME.py as a module (bench/ is scripts, not a package), to call its main(argv)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def face_like(rng, size=160, fake=False):
    """A small synthetic image: smooth blobs, plus high-frequency noise for the 'fake' class (learnable)."""
    coarse = rng.rand(size // 20, size // 20, 3)
    image = np.kron(coarse, np.ones((20, 20, 1))) * 200
    if fake:
        image += rng.rand(size, size, 3) * 50
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


# Stands in for ../shared/tools/holdout_guard.py (same command line, output and exit codes): it lists the images that
# look like HIDDEN_COLOUR, where the real one lists near-duplicates of the hidden evaluation images.
HIDDEN_COLOUR = (255, 0, 255)
GUARD_SCRIPT = """\
import os, sys
import numpy as np
from PIL import Image
folders, exclude = sys.argv[1:sys.argv.index("--write-exclude")], sys.argv[-1]
files = [os.path.join(r, f) for d in folders for r, _, fs in os.walk(d) for f in sorted(fs)
         if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp"))]
hits = [p for p in files if np.abs(np.asarray(Image.open(p).convert("RGB"), float).mean((0, 1)) - (255, 0, 255)).max() < 30]
open(exclude, "w").write("".join(p + "\\n" for p in hits))
print(f"{len(files)} images checked: {len(hits)} near-duplicates of hidden evaluation images", file=sys.stderr)
sys.exit(1 if hits else 0)
"""


def write_guard(folder):
    """The stand-in guard script in `folder`; returns its path."""
    path = os.path.join(folder, "holdout_guard.py")
    with open(path, "w") as f:
        f.write(GUARD_SCRIPT)
    return path


def make_image_folder(root, per_class=10, size=160, seed=0):
    """`root/real/*.jpg` and `root/fake/*.jpg`, each image distinct."""
    rng = np.random.RandomState(seed)
    for label in ("real", "fake"):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for i in range(per_class):
            face_like(rng, size, fake=label == "fake").save(os.path.join(root, label, f"{label}_{i:03d}.jpg"), quality=92)
    return str(root)


TINY_THRESHOLDS = {"fake": 0.6, "real": 0.4, "target_precision": 0.95}
TINY_METRICS = {"thresholds": TINY_THRESHOLDS, "labels": {"0": "fake", "1": "real"}}


def make_tiny_models(root, seed=0):
    """Untrained but complete tuned-cnn, xception and ensemble folders (Hub layout, thresholds in config.json,
    metrics.json), as training writes them.

    Batch-norm statistics and the final layers are randomised so the outputs depend on the input (a fresh
    model's near-constant 0.5 would hide bugs).
    """
    torch.manual_seed(seed)
    folders = {}
    for name, kwargs in (("tuned-cnn", {"width": 0.25, "image_size": 48}), ("xception", {"width": 0.125, "image_size": 64})):
        model = create_model(name, **kwargs)
        _randomise(model)
        folders[name] = save_model(model.eval(), os.path.join(root, name), thresholds=TINY_THRESHOLDS)
    ensemble = create_ensemble([folders["tuned-cnn"], folders["xception"]])
    with torch.no_grad():
        ensemble.combiner.weight.add_(torch.randn_like(ensemble.combiner.weight) * 0.5)
    folders["ensemble"] = save_model(ensemble.eval(), os.path.join(root, "ensemble"), thresholds=TINY_THRESHOLDS)
    for name, folder in folders.items():
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump({"model": name, **TINY_METRICS}, f)
    return folders


def _randomise(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        classifier = model.get_classifier()
        classifier.weight.normal_(0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Files that say where they came from: C2PA-signed, tampered, with generator text chunks, XMP or EXIF

AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CLAIM_GENERATOR = {"name": "TestDiffusion", "version": "1.0"}


def make_test_ca(organisation="Test Generator Inc"):
    """A root CA and an end-entity ES256 (P-256) signing certificate it issued, with the extensions C2PA asks of
    a signer (digitalSignature key usage, emailProtection extended key usage) -> (chain PEM, key PEM, root PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])

    def usage(**allowed):
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        return x509.KeyUsage(**{**flags, **allowed})

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    root = certificate(name("Test Root CA"), name("Test Root CA"), root_key.public_key(), root_key, [
        (x509.BasicConstraints(ca=True, path_length=None), True), (usage(key_cert_sign=True, crl_sign=True), True)])
    signer = certificate(name("Test Signer"), root.subject, key.public_key(), root_key, [
        (x509.BasicConstraints(ca=False, path_length=None), True), (usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False)])
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return signer.public_bytes(pem) + root.public_bytes(pem), key_pem, root.public_bytes(pem).decode()


def sign_c2pa(image_bytes, mime, ca, source_type=AI_SOURCE, claim_generator=CLAIM_GENERATOR):
    """`image_bytes` with C2PA content credentials signed by `ca` (make_test_ca): one c2pa.created action."""
    import io

    import c2pa

    chain, key, _ = ca
    manifest = {"claim_generator_info": [claim_generator], "title": "generated image",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": source_type,
                     "softwareAgent": {"name": claim_generator["name"]}}]}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(image_bytes), out)
    return out.getvalue()


def tamper_jpeg(data):
    """One bit of the JPEG's compressed pixels flipped, past the credentials: it still decodes, the hash fails."""
    data = bytearray(data)
    i = (data.rfind(b"\xff\xda") + len(data)) // 2  # the middle of the last scan
    while data[i] in (0x00, 0xFE, 0xFF) or data[i - 1] == 0xFF:
        i += 1
    data[i] ^= 0x10
    return bytes(data)


def corrupt_manifest(data):
    """The credentials' JUMBF box scrambled in the middle (the pixels untouched)."""
    data = bytearray(data)
    start = data.find(b"c2pa")
    for i in range(start + 100, start + 400):
        data[i] ^= 0xA5
    return bytes(data)


def provenance_files(folder, face):
    """Each kind of self-description on the PIL image `face`, written to `folder` -> {name: path}, and the CA."""
    import io

    from PIL import PngImagePlugin

    ca = make_test_ca()
    jpeg, png = io.BytesIO(), io.BytesIO()
    face.save(jpeg, "JPEG", quality=90)
    face.save(png, "PNG")
    signed = sign_c2pa(jpeg.getvalue(), "image/jpeg", ca)
    files = {
        "plain.jpg": jpeg.getvalue(),
        "c2pa-ai.jpg": signed,
        "c2pa-ai.png": sign_c2pa(png.getvalue(), "image/png", ca),
        "c2pa-camera.jpg": sign_c2pa(jpeg.getvalue(), "image/jpeg", ca,
                                     "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
                                     {"name": "Test Camera Firmware", "version": "2.1"}),
        "c2pa-tampered.jpg": tamper_jpeg(signed),
        "c2pa-corrupt.jpg": corrupt_manifest(signed),
    }
    for name, path in files.items():
        files[name] = os.path.join(folder, name)
        with open(files[name], "wb") as f:
            f.write(path)

    def save_png(name, **text):
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        files[name] = os.path.join(folder, name)
        face.save(files[name], pnginfo=info)

    save_png("a1111.png", parameters=A1111_PARAMETERS)
    save_png("comfyui.png", prompt=json.dumps({"4": {"class_type": "CheckpointLoaderSimple",
                                                     "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
                                               "3": {"class_type": "KSampler", "inputs": {"seed": 7}}}),
             workflow=json.dumps({"nodes": [{"id": 4, "type": "CheckpointLoaderSimple"}]}))
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
           'xmlns:xmp="http://ns.adobe.com/xap/1.0/"><Iptc4xmpExt:DigitalSourceType>' + AI_SOURCE +
           '</Iptc4xmpExt:DigitalSourceType><xmp:CreatorTool>Imagen 3</xmp:CreatorTool></rdf:Description>'
           '</rdf:RDF></x:xmpmeta>')
    files["xmp-ai.jpg"] = os.path.join(folder, "xmp-ai.jpg")
    face.save(files["xmp-ai.jpg"], quality=90, xmp=xmp.encode())
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "NIKON CORPORATION", "NIKON Z 6", "Adobe Photoshop 25.0"
    files["exif-camera.jpg"] = os.path.join(folder, "exif-camera.jpg")
    face.save(files["exif-camera.jpg"], quality=90, exif=exif)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111_PARAMETERS.encode("utf-16-be")
    files["a1111.jpg"] = os.path.join(folder, "a1111.jpg")
    face.save(files["a1111.jpg"], quality=90, exif=exif)
    return files, ca


A1111_PARAMETERS = ("portrait photo of a woman, detailed skin\nNegative prompt: blurry, cartoon\n"
                    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567, Size: 512x512, "
                    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly")
