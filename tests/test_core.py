"""The core pieces the app stands on, called directly: input checks, video frames, drawing and files, models,
and the summaries and tables of Detect, Compare, Video and Batch (on made-up scores: no model runs).

    python -m pytest tests/test_core.py
"""

import base64
import io
import os

import json

import av
import numpy as np
import pytest
from PIL import Image

from deepfake_detector.faces import Face
from deepfake_detector.images import DataError
from deepfake_detector.inference import Detector, ScoredFaces, agreement, choose, verdict
from deepfake_detector.inputs import BATCH_MAX_FILES, check_files, check_range, check_thresholds, read_image
from deepfake_detector.models import create_like, create_model, data_config_of
from deepfake_detector.registry import none_resolved_message
from deepfake_detector.render import image_file, images_as_files, info_markdown, suspicious_frames
from deepfake_detector.report import (BATCH_TABLE, COMPARE_COLUMNS, DETECT_COLUMNS, VIDEO_COLUMNS, batch_summary,
                                      compare_summary, detect_summary, video_summary)
from deepfake_detector.video import ScoredVideo, read_video_frames
from helpers import TINY_METRICS, TINY_THRESHOLDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = {"fake": TINY_THRESHOLDS["fake"], "real": TINY_THRESHOLDS["real"]}  # fake if >= 0.6, real if <= 0.4


def detector(name="m", metrics=None, thresholds=T):
    """A served model as the summaries see it (name, thresholds, metrics); never loaded."""
    return Detector(name, path="", source="local folder", metrics=metrics or {},
                    config={"verdict_thresholds": thresholds})


def scored(*p_fake, whole_image=False, thresholds=T):
    faces = [Face((10 * i, 0, 10 * i + 8, 8), 0.98) for i in range(len(p_fake))]
    if whole_image:
        faces = [Face((0, 0, 64, 48), 0.0, whole_image=True)]
    return ScoredFaces(faces, np.array(p_fake), [verdict(p, thresholds) for p in p_fake], thresholds, 30.0, 12.0)


def message(function, *args):
    with pytest.raises(DataError) as error:
        function(*args)
    return str(error.value)


def test_read_image_takes_paths_bytes_and_gradio_payloads():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert read_image({"path": None, "url": data_url}).size == (64, 48)
    assert read_image(buffer.getvalue()).size == (64, 48)
    assert message(read_image, None) == "No image: upload, paste or take a photo (or click an example) first."
    assert message(read_image, {"url": "data:image/png;base64,@@@"}) == (
        "The pasted image could not be decoded: save it to a file and upload that.")
    small = io.BytesIO()
    Image.new("RGB", (20, 40)).save(small, format="PNG")
    assert message(read_image, small.getvalue()) == (
        "The image is only 20x40 pixels: upload one at least 32 pixels on each side.")


def test_checks_say_what_to_do():
    assert check_thresholds(0.7, 0.3) == {"fake": 0.7, "real": 0.3}
    assert message(check_range, 5, 10, 20, "Top-k") == "Top-k must be between 10 and 20 (got 5)."
    assert message(check_files, []) == "No files: upload one or more images."
    assert message(check_files, ["a.jpg"] * (BATCH_MAX_FILES + 1)) == (
        f"{BATCH_MAX_FILES + 1} files is over the {BATCH_MAX_FILES}-file limit: split them into smaller batches.")
    assert message(choose, {"a": 1}, "b") == "Unknown model 'b': choose one of a."


def test_agreement_names_who_said_what():
    rows = [{"model": "a", "verdict": "fake"}, {"model": "b", "verdict": "real"}, {"model": "c", "verdict": "fake"}]
    assert agreement(rows) == "The models **disagree**: fake: a, c; real: b."
    assert agreement(rows[:1]) == "All 1 models agree: **fake**."


def test_video_frames_are_spread_over_the_clip(tmp_path):
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (i * 12, 0, 0)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = read_video_frames(path, 4)
    times = [t for t, _ in frames]
    assert len(frames) == 4 and times == sorted(times) and 0 <= times[0] < times[-1] <= 2
    assert all(img.size == (64, 48) and img.mode == "RGB" for _, img in frames)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert message(read_video_frames, empty, 4) == "empty.mp4 is empty (0 bytes): upload a video file such as MP4 or WebM."


def test_image_files_are_named_by_content_and_found_inside_lists():
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    assert image_file(red) == image_file(red.copy()) != image_file(blue)
    gallery = images_as_files([(red, "caption"), "text"])
    assert gallery[0][0] == image_file(red) and gallery[0][1] == "caption" and gallery[1] == "text"
    assert Image.open(gallery[0][0]).size == (8, 8)


def test_info_markdown_shows_only_what_a_reader_needs():
    text = info_markdown({"member": "model", "fake_probability": 0.25, "samples": 200, "internal": 1}, "the face")
    assert text == "Explaining the face.\n- P(fake) of the face as the model sees it: 0.250\n- perturbed images: 200"


@pytest.mark.parametrize("name, kwargs", [("efficientnet-lite2", {"image_size": 224}),
                                          ("tuned-cnn", {"image_size": 128})])
def test_create_like_rebuilds_the_shipped_recipe_from_config_json(name, kwargs):
    model = create_like(os.path.join(ROOT, "models", name))
    shipped = create_model(name, **kwargs)
    assert data_config_of(model)["input_size"] == data_config_of(shipped)["input_size"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in shipped.parameters())


def test_detect_summary_counts_the_verdicts_of_several_faces():
    summary, table = detect_summary(scored(0.9, 0.1, 0.95, 0.5), detector("tiny"))
    assert summary.startswith("4 faces: 2 fake, 1 real, 1 uncertain\n\n- face 1: **FAKE** (P(fake) = 0.90)\n")
    assert "- face 4: **UNCERTAIN** (P(fake) = 0.50)" in summary
    assert "Model **tiny** · fake if P(fake) ≥ 0.60, real if ≤ 0.40, uncertain between · face detection 30 ms" in summary
    assert list(table.columns) == DETECT_COLUMNS and list(table["face"]) == ["1", "2", "3", "4"]
    assert list(table["verdict"]) == ["fake", "real", "fake", "uncertain"]
    assert table["where (left, top, right, bottom)"][1] == "10, 0, 18, 8"


def test_detect_summary_of_a_whole_image_says_no_face_was_found():
    summary, table = detect_summary(scored(0.4001, whole_image=True), detector(), frames=3)
    assert summary.startswith("No face found: the whole image was scored — **UNCERTAIN** (P(fake) = 0.4001).")
    assert "This file holds 3 frames" in summary
    assert table.iloc[0].tolist() == ["whole image", "uncertain", "0.4001", "–", "0, 0, 64, 48"]


def test_detect_summary_says_the_track_record_is_for_the_default_thresholds():
    metrics = {"thresholds": {"validation_precision": {"fake": 0.9, "real": 0.96}}}
    summary, _ = detect_summary(scored(0.7), detector(metrics=metrics))
    assert summary.startswith("1 face: **FAKE** (P(fake) = 0.70)")
    assert "right when it said fake 90% / real 96% on validation." in summary and "you moved" not in summary
    moved = {"fake": 0.8, "real": 0.2}
    summary, _ = detect_summary(scored(0.7, thresholds=moved), detector(metrics=metrics))
    assert "(its defaults are 0.60 / 0.40; you moved the sliders, so this does not apply as is)" in summary
    assert detect_summary(scored(0.7), detector(metrics=TINY_METRICS))[0].count("Track record") == 0


def test_compare_table_puts_the_most_suspicious_model_first_at_its_own_thresholds():
    detectors = {"a": detector("a"), "b": detector("b", thresholds={"fake": 0.85, "real": 0.125})}
    rows = [{"model": "a", "p_fake": 0.2, "verdict": "real", "latency_ms": 12.4},
            {"model": "b", "p_fake": 0.8, "verdict": "uncertain", "latency_ms": 40.6}]
    summary, chart_rows, table = compare_summary(rows, detectors, "the largest face", frames=2)
    assert [r["model"] for r in chart_rows] == ["b", "a"] and chart_rows[0]["fake_threshold"] == 0.85
    assert list(table.columns) == COMPARE_COLUMNS
    assert table.values.tolist() == [["b", "0.80", "uncertain", "0.85", "0.125", "41"],
                                     ["a", "0.20", "real", "0.60", "0.40", "12"]]
    assert summary.startswith("The models **disagree**: uncertain: b; real: a.\n\nScored the largest face;")
    assert "This file holds 2 frames" in summary


def test_video_summary_and_its_suspicious_frames():
    frames = [Image.new("RGB", (64, 48), (i * 40, 0, 0)) for i in range(4)]
    faces = [[Face((0, 0, 64, 48), 0.0, whole_image=True)], [Face((0, 0, 20, 20), 0.99), Face((30, 0, 50, 20), 0.9)],
             [Face((4, 4, 24, 24), 0.97)], [Face((0, 0, 64, 48), 0.0, whole_image=True)]]
    face_p = [np.array([0.1]), np.array([0.3, 0.9]), np.array([0.7]), np.array([0.2])]
    frame_p = np.array([0.1, 0.9, 0.7, 0.2])
    v = ScoredVideo([0.0, 0.5, 1.0, 1.5], frames, faces, face_p, frame_p, np.array([1, 2]), 0.8, "fake", T)
    summary, curve, table = video_summary(v, detector("tiny"))
    assert summary.startswith("Clip: **FAKE** (P(fake) = 0.80) — mean P(fake) of the 2 most suspicious of 4 "
                              "sampled frames, model **tiny**")
    assert summary.endswith("No face found in 2 frame(s): those were scored as whole frames.")
    assert list(table.columns) == VIDEO_COLUMNS
    assert table.values.tolist() == [["0.0", 0, "0.10", "real"], ["0.5", 2, "0.90", "fake"],
                                     ["1.0", 1, "0.70", "fake"], ["1.5", 0, "0.20", "real"]]
    assert list(curve.columns) == ["seconds", "fake_probability"] and curve["fake_probability"].tolist()[1] == 0.9
    gallery = suspicious_frames(v)
    assert [caption for _, caption in gallery] == ["0.5 s · P(fake) 0.90", "1.0 s · P(fake) 0.70"]
    assert gallery[0][0].size == (64, 48) and gallery[0][0].tobytes() != frames[1].tobytes()  # boxes drawn


def test_batch_summary_counts_verdicts_and_unreadable_files():
    row = {"faces": 1, "model": "tiny", "error": ""}
    rows = [dict(row, file="a.jpg", p_fake=0.9, verdict="fake"), dict(row, file="b.jpg", p_fake=0.95, verdict="fake"),
            dict(row, file="c.jpg", p_fake=0.4001, verdict="uncertain"),
            dict(row, file="d.txt", faces=0, p_fake="", verdict="", error="d.txt is not an image.")]
    summary, table = batch_summary(rows, detector("tiny"))
    assert summary == "4 files with **tiny**: 2 fake, 1 uncertain; 1 could not be read (see the problem column)."
    assert list(table.columns) == list(BATCH_TABLE.values())
    assert list(table["P(fake)"]) == ["0.90", "0.95", "0.4001", ""] and table["problem"][3] == "d.txt is not an image."
    summary, _ = batch_summary(rows[3:], detector("tiny"))
    assert summary == "1 files with **tiny**: none scored; 1 could not be read (see the problem column)."
    assert batch_summary(rows[:1], detector("tiny"))[0] == "1 files with **tiny**: 1 fake."


def test_none_resolved_message_names_the_configured_models(tmp_path):
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": [{"name": "xception"}, {"name": "ensemble", "repo_id": "u/ensemble"}]}))
    assert none_resolved_message(config).startswith("No model found: models/models.json lists xception, ensemble, ")
