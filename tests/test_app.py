"""The app: face detection, the plain functions on tiny models, the exact message of every bad input, and every
API endpoint of the launched app through gradio_client.

    python -m pytest tests/test_app.py
"""

import csv
import json
import os
import re
import socket
import struct
import zlib
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from deepfake_detector.faces import MAX_SIDE, Face, crop_box, crop_face, detect_faces
from deepfake_detector import explain
from deepfake_detector.report import probability_text
from helpers import make_tiny_models, provenance_files
from deepfake_detector.inference import score, verdict
from deepfake_detector.render import COLOURS, draw_faces

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TWO_FACES, ONE_FACE, NO_FACE = (os.path.join(EXAMPLES, name) for name in
                                ("two-faces.jpg", "real-ffhq.jpg", "no-face-landscape.jpg"))
THRESHOLDS = {"fake": 0.6, "real": 0.4}  # what tests/helpers.py writes into every tiny model's config.json
BATCH_CSV_COLUMNS = ["file", "faces", "p_fake", "verdict", "model", "provenance", "provenance_kind", "provenance_hint",
                     "provenance_strength", "provenance_signature", "provenance_generator", "provenance_summary",
                     "error"]


# ---------------------------------------------------------------------------------------------------------
# Inputs, made in a temporary folder


def png_header_only(width, height):
    """A PNG that declares width x height but holds one row: a decompression bomb as far as the header says."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width)))
            + chunk(b"IEND", b""))


def write_clip(path, frames, fps):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def make_inputs(folder):
    """Every odd input the app must handle, by name -> path."""
    face = Image.open(ONE_FACE).convert("RGB")
    paths = {name: str(folder / name) for name in (
        "notes.txt", "empty.jpg", "truncated.jpg", "tiny.png", "bomb.png", "cmyk.jpg", "16bit.png", "rgba.png",
        "palette.png", "animated.gif", "rotated.jpg", "clip.mp4", "long.mp4", "many-frames.mp4", "broken.mp4",
        "truncated.mp4", "empty.mp4", "big.mp4")}
    with open(paths["notes.txt"], "w") as f:
        f.write("this is not an image\n")
    open(paths["empty.jpg"], "wb").close()
    raw = open(ONE_FACE, "rb").read()
    with open(paths["truncated.jpg"], "wb") as f:
        f.write(raw[: len(raw) // 2])
    face.resize((20, 16)).save(paths["tiny.png"])
    with open(paths["bomb.png"], "wb") as f:
        f.write(png_header_only(12000, 10000))
    face.convert("CMYK").save(paths["cmyk.jpg"])
    Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257).save(paths["16bit.png"])
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(paths["rgba.png"])
    face.convert("P", palette=Image.ADAPTIVE).save(paths["palette.png"])
    face.save(paths["animated.gif"], save_all=True, append_images=[Image.new("RGB", face.size)], duration=100)
    # Upright it is 200 wide and 300 tall; stored turned a quarter left, with EXIF orientation 6 ("turn right").
    upright = Image.new("RGB", (200, 300), (200, 200, 190))
    upright.paste(face.resize((180, 180)), (10, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.rotate(90, expand=True).save(paths["rotated.jpg"], exif=exif)

    two = Image.open(TWO_FACES).convert("RGB").resize((240, 130))
    write_clip(paths["clip.mp4"], [two.rotate(i % 4) for i in range(30)], fps=10)  # 3 s
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    write_clip(paths["long.mp4"], [grey] * 62, fps=1)  # 62 s
    write_clip(paths["many-frames.mp4"], [grey] * 3700, fps=100)  # 37 s
    with open(paths["broken.mp4"], "wb") as f:
        f.write(np.random.RandomState(0).bytes(5000))
    clip = open(paths["clip.mp4"], "rb").read()
    with open(paths["truncated.mp4"], "wb") as f:
        f.write(clip[: len(clip) // 2])
    open(paths["empty.mp4"], "wb").close()
    with open(paths["big.mp4"], "wb") as f:
        f.truncate(51_000_000)  # sparse: 51 MB on paper, nothing on disk
    return paths


BAD_IMAGES = {  # input -> the whole message, as a regular expression
    "notes.txt": re.escape("notes.txt is not an image this app can read: upload a JPEG, PNG, WebP, BMP, TIFF or GIF."),
    "empty.jpg": re.escape("empty.jpg is empty (0 bytes): upload an image file such as JPEG or PNG."),
    "truncated.jpg": (r"truncated\.jpg is corrupt or truncated \(image file is truncated \(\d+ bytes not "
                      r"processed\)\): re-export or re-download it\."),
    "tiny.png": re.escape("The image is only 20x16 pixels: upload one at least 32 pixels on each side."),
    "bomb.png": re.escape("bomb.png is 12000x10000 (120 megapixels), over the 100-megapixel limit: downscale it "
                          "before uploading."),
}
ODD_IMAGES = ["cmyk.jpg", "16bit.png", "rgba.png", "palette.png", "animated.gif", "rotated.jpg"]
BAD_VIDEOS = {
    "long.mp4": "long.mp4 is 62 s long, over the 60-second limit: trim it.",
    "many-frames.mp4": "many-frames.mp4 has 3700 frames, over the 3600-frame limit: trim it or lower its frame rate.",
    "broken.mp4": "broken.mp4 is not a video that can be read, or it is corrupt: upload an MP4, WebM, MOV or AVI clip.",
    "truncated.mp4": "truncated.mp4 is not a video that can be read, or it is corrupt: upload an MP4, WebM, MOV or "
                     "AVI clip.",
    "empty.mp4": "empty.mp4 is empty (0 bytes): upload a video file such as MP4 or WebM.",
    "big.mp4": "big.mp4 is 51 MB, over the 50 MB limit: trim or compress the clip.",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    """The example face C2PA-signed, tampered, with A1111 parameters, …: {name: path} (tests/helpers.py)."""
    return provenance_files(str(tmp_path_factory.mktemp("credentials")), Image.open(ONE_FACE).convert("RGB"))[0]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def detectors(tiny_models):
    return app.load_detectors(tiny_models)


def error_message(function, *args, **kwargs):
    """The message of the gr.Error that function(*args, **kwargs) raises (str(gr.Error) is its repr)."""
    with pytest.raises(gr.Error) as error:
        function(*args, **kwargs)
    return error.value.message


def p_fake_of_main_face(detectors, name, path):
    img = Image.open(path).convert("RGB")
    return float(score(detectors[name], [crop_face(img, detect_faces(img)[0].box)])[0][0])


# ---------------------------------------------------------------------------------------------------------
# Faces


def test_detect_faces_finds_each_face_largest_first():
    img = Image.open(TWO_FACES).convert("RGB")
    faces = detect_faces(img)
    assert len(faces) == 2 and not any(f.whole_image for f in faces)
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in (f.box for f in faces)]
    assert areas == sorted(areas, reverse=True)
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height and face.confidence >= 0.9
        (eye_l, eye_r, nose, mouth_l, mouth_r) = face.keypoints  # five landmarks inside the face, upright
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.keypoints)
        assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0] and max(eye_l[1], eye_r[1]) < nose[1] < mouth_l[1]
    assert faces[0].box[0] > img.width / 2 > faces[1].box[2]  # one face on each half of the picture


@pytest.mark.parametrize("size", [(320, 240), (20, 20)])
def test_detect_faces_falls_back_to_the_whole_image(size):
    img = Image.open(NO_FACE).convert("RGB").resize(size)
    assert detect_faces(img) == [Face((0, 0, *size), 0.0, whole_image=True)]


def test_large_images_are_downscaled_for_detection_and_boxes_mapped_back():
    img = Image.open(ONE_FACE).convert("RGB")
    large = img.resize((2560, 2560), Image.BICUBIC)
    assert max(large.size) > MAX_SIDE
    (small_face,), (large_face,) = detect_faces(img), detect_faces(large)
    np.testing.assert_allclose(np.array(large_face.box) / 10, small_face.box, atol=0.04 * 256)
    np.testing.assert_allclose(np.array(large_face.keypoints) / 10, small_face.keypoints, atol=0.04 * 256)


def test_crop_box_is_a_square_with_margin_kept_inside_the_image():
    x0, y0, x1, y1 = crop_box((1000, 1000), (400, 400, 500, 500), margin=0.3)
    assert (x0, y0, x1, y1) == (370, 370, 530, 530)  # 100 px box, 30 px margin each side
    assert crop_box((1000, 1000), (0, 0, 100, 100)) == (0, 0, 160, 160)  # shifted inwards at the corner
    assert crop_box((300, 200), (0, 0, 300, 200)) == (0, 0, 300, 200)  # larger than the image: all of it
    assert crop_face(Image.new("RGB", (1000, 1000)), (400, 400, 500, 500)).size == (160, 160)


# ---------------------------------------------------------------------------------------------------------
# The plain functions


def test_detect_outputs(detectors):
    annotated, summary, table, credentials, record = app.detect(detectors, TWO_FACES, "xception", 0.6, 0.4)
    assert credentials.startswith("**What the file says: nothing.** No content credentials") and record["kind"] == "none"
    assert isinstance(annotated, Image.Image) and annotated.size == Image.open(TWO_FACES).size
    assert list(table.columns) == ["face", "verdict", "P(fake)", "face found (certainty)",
                                   "where (left, top, right, bottom)"]
    assert table["face"].tolist() == ["1", "2"]
    p_fake = table["P(fake)"].astype(float)
    assert ((p_fake >= 0) & (p_fake <= 1)).all()
    assert table["verdict"].tolist() == [verdict(p, THRESHOLDS) for p in p_fake]  # shown precise enough to decide
    assert summary.startswith("2 faces: ") and "Model **xception**" in summary and " ms" in summary


def test_probabilities_differ_between_models(detectors):
    p = {name: p_fake_of_main_face(detectors, name, ONE_FACE) for name in detectors}
    assert len({round(v, 4) for v in p.values()}) == 3, p  # the tiny models are random, not constant


@pytest.mark.parametrize("offsets, expected", [((0.0, -0.2), "fake"), ((0.2, 0.0), "real"), ((0.1, -0.1), "uncertain")])
def test_verdict_follows_the_thresholds(detectors, offsets, expected):
    p = p_fake_of_main_face(detectors, "tuned-cnn", ONE_FACE)
    fake_t, real_t = np.clip(p + offsets[0], 0, 1), np.clip(p + offsets[1], 0, 1)
    _, summary, table, _, _ = app.detect(detectors, ONE_FACE, "tuned-cnn", fake_t, real_t)
    assert table["verdict"].tolist() == [expected]
    shown = probability_text(p, {"fake": fake_t, "real": real_t})
    assert summary.startswith(f"1 face: **{expected.upper()}** (P(fake) = {shown})")
    assert verdict(float(shown), {"fake": fake_t, "real": real_t}) == expected


def test_thresholds_in_the_wrong_order_are_refused(detectors):
    assert error_message(app.detect, detectors, ONE_FACE, "tuned-cnn", 0.3, 0.7) == (
        "The thresholds must satisfy 0 ≤ real (0.70) ≤ fake (0.30) ≤ 1: move the sliders so the fake threshold is "
        "not below the real one.")


def test_unknown_model_is_refused(detectors):
    assert (error_message(app.detect, detectors, ONE_FACE, "resnet", 0.6, 0.4)
            == "Unknown model 'resnet': choose one of tuned-cnn, xception, ensemble.")


def test_no_face_is_said_and_the_whole_image_scored(detectors):
    _, summary, table, _, _ = app.detect(detectors, NO_FACE, "xception", 0.6, 0.4)
    assert summary.startswith("No face found: the whole image was scored")
    assert table["face"].tolist() == ["whole image"]
    assert table["where (left, top, right, bottom)"].tolist() == ["0, 0, 320, 240"]


def test_draw_faces_colours_each_box_by_its_verdict():
    img = Image.new("RGB", (400, 200), (255, 255, 255))
    faces = [Face((20, 60, 120, 180), 0.99), Face((250, 60, 350, 180), 0.98)]
    out = np.asarray(draw_faces(img, faces, [0.9, 0.1], ["fake", "real"]))
    assert tuple(out[150, 21]) == COLOURS["fake"]  # left edge of box 1, below its label
    assert tuple(out[150, 251]) == COLOURS["real"]
    assert tuple(out[150, 200]) == (255, 255, 255)  # between the boxes nothing is drawn


def test_compare_runs_every_model_and_says_whether_they_agree(detectors):
    summary, chart, table = app.compare(detectors, ONE_FACE)
    assert list(table.columns) == ["model", "P(fake)", "verdict", "fake if ≥", "real if ≤", "time (ms)"]
    p = {name: p_fake_of_main_face(detectors, name, ONE_FACE) for name in detectors}
    assert table["model"].tolist() == sorted(p, key=lambda name: -p[name])  # the most suspicious first
    assert isinstance(chart, Image.Image)
    for _, row in table.iterrows():
        assert row["verdict"] == verdict(float(row["P(fake)"]), THRESHOLDS) == verdict(p[row["model"]], THRESHOLDS)
        assert float(row["P(fake)"]) == pytest.approx(p[row["model"]], abs=0.006)
        assert (row["fake if ≥"], row["real if ≤"]) == ("0.60", "0.40") and float(row["time (ms)"]) >= 0
    verdicts = table["verdict"].tolist()
    agree = len(set(verdicts)) == 1
    assert summary.startswith(f"All 3 models agree: **{verdicts[0]}**." if agree else "The models **disagree**: ")


def test_batch_table_and_csv(detectors, inputs):
    summary, table, csv_path = app.batch(detectors, [ONE_FACE, inputs["notes.txt"], NO_FACE], "tuned-cnn")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == BATCH_CSV_COLUMNS
    assert [r["file"] for r in rows] == ["real-ffhq.jpg", "notes.txt", "no-face-landscape.jpg"]
    assert [r["faces"] for r in rows] == ["1", "0", "0"]
    assert float(rows[0]["p_fake"]) == round(p_fake_of_main_face(detectors, "tuned-cnn", ONE_FACE), 4)
    assert rows[0]["verdict"] == verdict(float(rows[0]["p_fake"]), THRESHOLDS) and rows[0]["error"] == ""
    assert rows[1] == {"file": "notes.txt", "faces": "0", "p_fake": "", "verdict": "", "model": "tuned-cnn",
                       **{c: "" for c in BATCH_CSV_COLUMNS[5:-1]},
                       "error": "notes.txt is not an image this app can read: upload a JPEG, PNG, WebP, BMP, TIFF or GIF."}
    assert rows[0]["provenance"] == "nothing stated" and rows[0]["provenance_kind"] == "none"
    assert list(table.columns) == ["file", "faces", "P(fake)", "verdict", "model", "the file says", "problem"]
    assert table["file"].tolist() == [r["file"] for r in rows]
    assert summary.startswith("3 files with **tuned-cnn**: ") and summary.endswith(
        "; 1 could not be read (see the problem column).")


SIGNED_SAYS = ("Content credentials signed by Test Signer (Test Generator Inc) say this image was created by an AI "
               "model (claim generator: TestDiffusion 1.0).")


def test_detect_shows_what_the_file_says_beside_an_unchanged_verdict(detectors, credentials):
    _, plain_summary, plain_table, plain_says, _ = app.detect(detectors, credentials["plain.jpg"], "xception", 0.6, 0.4)
    expected = {
        "c2pa-ai.jpg": ("untrusted", "**What the file says: AI-generated · signed, certificate not trusted · "
                                     "TestDiffusion 1.0** (strength of evidence: moderate)\n\n" + SIGNED_SAYS),
        "c2pa-tampered.jpg": ("invalid", "**What the file says: AI-generated · fails validation · TestDiffusion 1.0** "
                                         "(strength of evidence: weak)\n\nContent credentials signed by Test Signer "
                                         "(Test Generator Inc) are present but fail validation: the image was changed "
                                         "after it was signed."),
        "c2pa-corrupt.jpg": ("invalid", "**What the file says: origin not stated · fails validation** (strength of "
                                        "evidence: weak)\n\nThe file carries content credentials that cannot be "
                                        "read (Verify: unexpected end of file)"),
        "a1111.png": ("none", "**What the file says: AI-generated · unsigned · Stable Diffusion web UI "
                              "(v1-5-pruned-emaonly)** (strength of evidence: moderate)\n\nThe file carries Stable "
                              "Diffusion generation parameters in a PNG text chunk"),
    }
    for name, (signature, says) in expected.items():
        _, summary, table, credentials_md, record = app.detect(detectors, credentials[name], "xception", 0.6, 0.4)
        assert credentials_md.startswith(says), (name, credentials_md)
        assert record["signature"] == signature and record["summary"] in credentials_md
        if name != "a1111.png":  # the same JPEG pixels as plain.jpg: the credentials never move the verdict
            assert table.equals(plain_table) and summary.split("· face detection")[0] == plain_summary.split(
                "· face detection")[0]
    assert plain_says.startswith("**What the file says: nothing.**")


def test_batch_carries_provenance_in_the_table_and_the_csv(detectors, credentials):
    names = ["c2pa-ai.jpg", "c2pa-tampered.jpg", "a1111.png", "plain.jpg"]
    summary, table, csv_path = app.batch(detectors, [credentials[n] for n in names], "tuned-cnn")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["provenance_kind"] for r in rows] == ["c2pa", "c2pa", "png-parameters", "none"]
    assert [r["provenance_signature"] for r in rows] == ["untrusted", "invalid", "none", "none"]
    assert [r["provenance_hint"] for r in rows] == ["ai-generated", "ai-generated", "ai-generated", "unknown"]
    assert rows[0]["provenance_generator"] == "TestDiffusion 1.0" and rows[0]["provenance_summary"].startswith(SIGNED_SAYS)
    assert table["the file says"].tolist() == [r["provenance"] for r in rows]
    assert table["the file says"][0] == "AI-generated · signed, certificate not trusted · TestDiffusion 1.0"
    assert rows[0]["p_fake"] == rows[1]["p_fake"] == rows[3]["p_fake"]  # the same pixels, the same verdict
    assert summary.endswith(" 3 say where they came from (content credentials or generator metadata: see 'the file "
                            "says'; it does not change the verdicts).")


def test_provenance_alone_needs_no_model(credentials):
    says, record = app.provenance({}, credentials["c2pa-ai.jpg"])
    assert SIGNED_SAYS in says and record["generator"] == "TestDiffusion 1.0"
    assert record["details"]["validation_state"] == "Valid"
    assert error_message(app.provenance, {}, None) == "No image: upload, paste or take a photo (or click an example) first."


def test_batch_without_files_is_refused(detectors):
    assert error_message(app.batch, detectors, [], "tuned-cnn") == "No files: upload one or more images."


def test_video_scores_sampled_frames_and_averages_the_most_suspicious(detectors, inputs):
    summary, plot, table, gallery = app.video(detectors, inputs["clip.mp4"], "xception", frames=8, top_k=3)
    assert len(table) == 8 and list(plot.columns) == ["seconds", "fake_probability"]
    assert list(table.columns) == ["time (s)", "faces", "P(fake)", "verdict"]
    times = plot["seconds"].tolist()
    assert times == sorted(times) and 0 <= times[0] < times[-1] < 3  # spread over the 3-second clip
    assert (table["faces"] == 2).all()  # both faces in every frame
    top3 = np.sort(plot["fake_probability"].to_numpy())[-3:].mean()
    clip_p = float(re.search(r"P\(fake\) = ([0-9.]+)", summary).group(1))
    assert clip_p == pytest.approx(top3, abs=0.006) and "mean P(fake) of the 3 most suspicious of 8" in summary
    assert len(gallery) == 3 and all(isinstance(image, Image.Image) for image, _ in gallery)


def test_model_cards_name_source_licence_and_limitations(detectors, tiny_models):
    cards = app.model_cards(detectors)
    assert cards.splitlines()[2] == "|  | tuned-cnn | xception | ensemble |"  # the models side by side
    assert "non-commercial" in cards and cards.count("a model folder given at start-up") == 3
    assert cards.count("### Limitations") == 1 and cards.count("diffusion models") == 1  # once, not per model
    assert not any(str(folder) in cards for folder in tiny_models.values())  # no server paths


def test_model_cards_say_where_hub_pull_found_each_model(tiny_models):
    from deepfake_detector.registry import ResolvedModel

    resolved = {"xception": ResolvedModel("xception", Path(tiny_models["xception"]), "embedded")}
    detectors = app.load_detectors(resolved, repo_ids={"xception": "someone/deepfake-xception"})
    cards = app.model_cards(detectors)
    assert "| Loaded from | the copy shipped with this app |" in cards and str(tiny_models["xception"]) not in cards
    assert "| Model page | [someone/deepfake-xception](https://huggingface.co/someone/deepfake-xception) |" in cards


def test_explanations(detectors):
    overlay, info = app.explain_lime(detectors, ONE_FACE, "tuned-cnn", num_samples=50)
    assert isinstance(overlay, Image.Image) and info.startswith("Explaining the face.")
    maps, info = app.explain_gradcam(detectors, ONE_FACE, "ensemble")  # all members, then each member
    assert [caption for _, caption in maps] == ["all members of ensemble", "tuned-cnn member of ensemble",
                                                "xception member of ensemble"], maps
    assert all(isinstance(image, Image.Image) for image, _ in maps) and info.count("Explaining the face.") == 3
    maps, _ = app.explain_gradcam(detectors, ONE_FACE, "xception")
    assert [caption for _, caption in maps] == ["xception"]
    for name in detectors:  # every layer offered resolves for every model: one per member for the ensemble
        for depth in explain.LAYER_DEPTHS:
            assert len(explain.stages_at_depth(detectors[name].classifier, depth)) == (2 if name == "ensemble" else 1)
    single, overlay = app.inside_model(detectors, ONE_FACE, "xception", "stage 2")
    both, _ = app.inside_model(detectors, ONE_FACE, "ensemble", "stage 2")
    assert isinstance(overlay, Image.Image) and both.height > 2 * single.height - 50  # one block per member
    assert (error_message(app.inside_model, detectors, ONE_FACE, "xception", "xception · stem (16 ch, 1/2)")
            == "xception has no layer 'xception · stem (16 ch, 1/2)': pick one of stem, stage 1, stage 2, stage 3, "
               "stage 4.")


def test_lime_samples_out_of_range_are_refused(detectors):
    assert (error_message(app.explain_lime, detectors, ONE_FACE, "tuned-cnn", num_samples=5000)
            == "The number of LIME samples must be between 20 and 1000 (got 5000).")


@pytest.fixture
def lime_timing(tmp_path, monkeypatch):
    """A bench/lime_timing.json timing tuned-cnn at 0.125 s a sample (40 fit in 5 s) and the ensemble at 0.5
    (10 fit: the minimum, 20); xception is not in it."""
    path = tmp_path / "lime_timing.json"
    path.write_text(json.dumps({"budget_s": 5.0, "machine": "the Space's 2 CPU cores", "date": "2027-01-02",
                                "models": {
        "tuned-cnn": {"seconds_per_sample": 0.125, "samples": 40, "p50_s": 8.0, "measured_at_samples": 64, "runs": 5},
        "ensemble": {"seconds_per_sample": 0.5, "samples": 20, "p50_s": 32.0, "measured_at_samples": 64,
                     "runs": 5}}}))
    monkeypatch.setattr(app, "LIME_TIMING", path)
    return path


def test_lime_default_and_help_follow_the_model(detectors, lime_timing):
    samples, said = app.lime_defaults(detectors, "tuned-cnn")
    assert samples == 40
    assert ("the default for tuned-cnn is 40 samples: ~5.0 s on the Space's 2 CPU cores (from 8.0 s at 64 samples, "
            "median of 5 runs, measured 2027-01-02)") in said
    samples, said = app.lime_defaults(detectors, "ensemble")
    assert samples == 20 and "~10.0 s on the Space's 2 CPU cores" in said
    assert "20 is the fewest that give a usable fit, so it takes longer than the 5 s the default aims for" in said
    samples, said = app.lime_defaults(detectors, "xception")
    assert samples == explain.LIME_SAMPLES
    assert f"the default for xception is {explain.LIME_SAMPLES} samples, not timed on this machine yet" in said
    assert (error_message(app.lime_defaults, detectors, "nope")
            == "Unknown model 'nope': choose one of tuned-cnn, xception, ensemble.")


def test_the_explain_tab_s_lime_slider_follows_its_model_dropdown(tiny_models, lime_timing):
    demo = app.build_demo(tiny_models, load="lazy")
    slider = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "LIME samples")
    shown = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lime-help")
    start = app.default_model(demo.detectors)
    assert (slider.value, shown.value) == app.lime_defaults(demo.detectors, start)
    follows = [f for f in demo.fns.values() if [o._id for o in f.outputs] == [slider._id, shown._id]]
    assert len(follows) == 1 and [t[1] for t in follows[0].targets] == ["change"]
    dropdown = demo.blocks[follows[0].targets[0][0]]
    assert isinstance(dropdown, gr.Dropdown) and follows[0].inputs == [dropdown]
    assert follows[0].fn("tuned-cnn")[0] == 40 and follows[0].fn("xception")[0] == explain.LIME_SAMPLES


def test_lime_without_a_sample_count_takes_the_model_s_default(detectors, lime_timing):
    _, info = app.explain_lime(detectors, ONE_FACE, "ensemble")
    assert "- perturbed images: 20" in info


# ---- bad and odd input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_images_get_one_clear_sentence(detectors, inputs, name):
    message = error_message(app.detect, detectors, inputs[name], "tuned-cnn", 0.6, 0.4)
    assert re.fullmatch(BAD_IMAGES[name], message), message


def test_no_image_gets_one_clear_sentence(detectors):
    assert (error_message(app.detect, detectors, None, "tuned-cnn", 0.6, 0.4)
            == "No image: upload, paste or take a photo (or click an example) first.")


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_odd_images_work(detectors, inputs, name):
    annotated, summary, table, _, _ = app.detect(detectors, inputs[name], "xception", 0.6, 0.4)
    assert table["face"].tolist() == ["1"], summary  # the face is found: decoded right, first frame, upright
    if name == "rotated.jpg":
        assert annotated.size == (200, 300)
    first_frame_only = "This file holds 2 frames (an animation or a multi-page image): only the first frame was scored."
    assert (first_frame_only in summary) == (name == "animated.gif"), summary
    compared = app.compare(detectors, inputs[name])[0]
    assert (first_frame_only in compared) == (name == "animated.gif"), compared


@pytest.mark.parametrize("name", BAD_VIDEOS)
def test_bad_videos_get_one_clear_sentence(detectors, inputs, name):
    assert error_message(app.video, detectors, inputs[name], "tuned-cnn", frames=8, top_k=3) == BAD_VIDEOS[name]


# ---------------------------------------------------------------------------------------------------------
# The launched app, through gradio_client


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tiny_models, tmp_path_factory):
    demo = app.build_demo(tiny_models).queue(**app.QUEUE_OPTIONS)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            **app.LAUNCH_OPTIONS)
    yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


def check_detect(client, inputs):
    image, summary, table, credentials, record = client.predict(handle_file(TWO_FACES), "xception", 0.6, 0.4,
                                                                api_name="/detect")
    assert summary.startswith("2 faces: ") and len(table["data"]) == 2 and record["kind"] == "none"
    assert Image.open(image).size == Image.open(TWO_FACES).size


def check_thresholds(client, inputs):
    assert client.predict("ensemble", api_name="/thresholds") == (0.6, 0.4)


def check_compare(client, inputs):
    summary, chart, table = client.predict(handle_file(ONE_FACE), api_name="/compare")
    assert sorted(row[0] for row in table["data"]) == ["ensemble", "tuned-cnn", "xception"]
    p_fake = [float(row[1]) for row in table["data"]]
    assert p_fake == sorted(p_fake, reverse=True) and Image.open(chart).size[0] > 0
    assert summary.startswith(("All 3 models agree", "The models **disagree**"))


def check_explain_lime(client, inputs):
    overlay, info = client.predict(handle_file(ONE_FACE), "tuned-cnn", 50, api_name="/explain_lime")
    assert info.startswith("Explaining the face.") and Image.open(overlay).size[0] > 0
    _, info = client.predict(handle_file(ONE_FACE), "tuned-cnn", None, api_name="/explain_lime")  # the model's own
    own = explain.default_lime_samples(explain.read_lime_timing(app.LIME_TIMING), "tuned-cnn")
    assert f"- perturbed images: {own}" in info


def check_explain_gradcam(client, inputs):
    maps, _ = client.predict(handle_file(ONE_FACE), "ensemble", api_name="/explain_gradcam")
    assert len(maps) == 3 and all(Image.open(item["image"]).size[0] > 0 for item in maps)


def check_inside_model(client, inputs):
    layers = endpoint_parameters(client, "/inside_model")["layer_name"]["type"]["enum"]
    assert layers == list(explain.LAYER_DEPTHS)  # what view_api offers is valid for every model
    for model in ("tuned-cnn", "xception", "ensemble"):
        maps, overlay = client.predict(handle_file(ONE_FACE), model, layers[0], api_name="/inside_model")
        assert Image.open(maps).size[0] > 0 and Image.open(overlay).size[0] > 0


def check_video(client, inputs):
    for clip in (handle_file(inputs["clip.mp4"]), {"video": handle_file(inputs["clip.mp4"])}):  # both documented forms
        summary, plot, table, gallery = client.predict(clip, "tuned-cnn", 4, 2, api_name="/video")
        assert summary.startswith("Clip: **") and len(table["data"]) == 4 and len(gallery) == 2


def check_batch(client, inputs):
    summary, table, csv_path = client.predict([handle_file(ONE_FACE), handle_file(NO_FACE)], "tuned-cnn",
                                              api_name="/batch")
    assert summary.startswith("2 files with **tuned-cnn**") and len(table["data"]) == 2
    with open(csv_path) as f:
        assert f.readline().strip() == ",".join(BATCH_CSV_COLUMNS)


def check_provenance(client, inputs):
    credentials, record = client.predict(handle_file(ONE_FACE), api_name="/provenance")
    assert credentials.startswith("**What the file says: nothing.**") and record["kind"] == "none"


def check_model_cards(client, inputs):
    cards = client.predict(api_name="/model_cards")
    assert "|  | tuned-cnn | xception | ensemble |" in cards and cards.count("### Limitations") == 1


ENDPOINTS = {f"/{check.__name__[len('check_'):]}": check for check in (
    check_detect, check_provenance, check_thresholds, check_compare, check_explain_lime, check_explain_gradcam,
    check_inside_model, check_video, check_batch, check_model_cards)}


def endpoint_parameters(client, api_name):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api_name]
    return {p["parameter_name"]: p for p in info["parameters"]}


def test_every_api_name_is_tested(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == set(ENDPOINTS)


@pytest.mark.parametrize("api_name", ENDPOINTS)
def test_endpoint(client, inputs, api_name):
    ENDPOINTS[api_name](client, inputs)


def test_credentials_through_the_api(client, credentials):
    """The uploaded file reaches the core as the very bytes sent: a signature still validates (or still fails)."""
    for name, kind, signature in (("c2pa-ai.jpg", "c2pa", "untrusted"), ("c2pa-ai.png", "c2pa", "untrusted"),
                                  ("c2pa-tampered.jpg", "c2pa", "invalid"), ("a1111.png", "png-parameters", "none")):
        *_, credentials_md, record = client.predict(handle_file(credentials[name]), "xception", 0.6, 0.4,
                                                    api_name="/detect")
        assert (record["kind"], record["signature"]) == (kind, signature), (name, record["summary"])
        assert record["summary"] in credentials_md
        says, alone = client.predict(handle_file(credentials[name]), api_name="/provenance")
        assert alone == record
    assert record["details"]["Seed"] == "1234567"
    *_, record = client.predict(handle_file(credentials["c2pa-ai.jpg"]), "xception", 0.6, 0.4, api_name="/detect")
    assert record["generator"] == "TestDiffusion 1.0" and record["summary"].startswith(SIGNED_SAYS)
    assert [s["code"] for s in record["details"]["validation_status"]] == ["signingCredential.untrusted"]
    _, _, csv_path = client.predict([handle_file(credentials["c2pa-ai.jpg"]), handle_file(credentials["c2pa-tampered.jpg"])],
                                    "tuned-cnn", api_name="/batch")
    with open(csv_path, newline="") as f:
        assert [r["provenance_signature"] for r in csv.DictReader(f)] == ["untrusted", "invalid"]


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_images_through_the_api_get_the_same_sentence(client, inputs, name):
    with pytest.raises(AppError) as error:
        client.predict(handle_file(inputs[name]), "tuned-cnn", 0.6, 0.4, api_name="/detect")
    assert re.fullmatch(BAD_IMAGES[name], error.value.message), error.value.message


@pytest.mark.parametrize("name", ["long.mp4", "broken.mp4", "empty.mp4"])
def test_bad_videos_through_the_api_get_the_same_sentence(client, inputs, name):
    with pytest.raises(AppError) as error:
        client.predict(handle_file(inputs[name]), "tuned-cnn", 8, 3, api_name="/video")
    assert error.value.message == BAD_VIDEOS[name]


def test_odd_images_through_the_api_and_the_app_keeps_serving(client, inputs):
    for name in ODD_IMAGES:
        image, summary, table, _, _ = client.predict(handle_file(inputs[name]), "xception", 0.6, 0.4,
                                                     api_name="/detect")
        assert [row[0] for row in table["data"]] == ["1"], (name, summary)
        if name == "rotated.jpg":
            assert Image.open(image).size == (200, 300)
    check_detect(client, inputs)  # after all the errors above, still answering


# ---- the README's gradio_client lines, as written ----------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_client_lines():
    """The lines of the README's gradio_client block (### From code) that call the app."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"### From code.*?```python\n(.*?)```", text, flags=re.DOTALL).group(1)
    return [line for line in block.splitlines() if "client.predict(" in line]


def test_the_readme_documents_every_endpoint(client):
    documented = {re.search(r'api_name="(/\w+)"', line).group(1) for line in readme_client_lines()}
    assert documented == set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def test_readme_snippets_run_against_the_app(client, monkeypatch):
    """Each line exactly as the README prints it, in its order (a later line may use an earlier one's result; the
    example files it names are the repository's), so a wrong argument, a wrong number of outputs or a renamed
    endpoint fails here."""
    monkeypatch.chdir(README.parent)
    namespace = {"client": client, "handle_file": handle_file}
    for line in readme_client_lines():
        before = set(namespace)
        exec(line.split("  #")[0], namespace)  # noqa: S102 - our own README, run on purpose
        assigned = [name for name in namespace if name not in before or name in line.split("=")[0]]
        assert assigned and all(namespace[name] is not None for name in assigned), line


# ---- start-up: the page before the models ------------------------------------------------------------------


def test_models_load_behind_the_page_and_a_request_waits_for_its_model(tiny_models):
    from deepfake_detector.inference import load_in_background

    demo = app.build_demo(tiny_models, load="lazy")  # what main() serves first
    assert not any(d.loaded for d in demo.detectors.values())
    assert demo.detectors["ensemble"].thresholds == THRESHOLDS  # read from config.json, no model needed
    thread = load_in_background(demo.detectors)
    # At once, while the thread loads the default model: another model is asked for (it waits its turn).
    _, summary, *_ = app.detect(demo.detectors, ONE_FACE, "tuned-cnn", 0.6, 0.4)
    thread.join(timeout=300)
    assert summary.startswith("1 face: ") and all(d.loaded for d in demo.detectors.values())
