"""The core pieces the app stands on, called directly: input checks, video frames, drawing and files, models.

    python -m pytest tests/test_core.py
"""

import base64
import io
import os

import av
import pytest
from PIL import Image

from deepfake_detector.images import DataError
from deepfake_detector.inference import agreement, choose
from deepfake_detector.inputs import BATCH_MAX_FILES, check_files, check_range, check_thresholds, read_image
from deepfake_detector.models import create_like, create_model, data_config_of
from deepfake_detector.render import image_file, images_as_files, info_markdown
from deepfake_detector.video import read_video_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.mark.parametrize("name", ["tuned-cnn", "xception"])
def test_create_like_rebuilds_the_shipped_recipe_from_config_json(name):
    model = create_like(os.path.join(ROOT, "models", name))
    shipped = create_model(name, width=0.5 if name == "xception" else 1.0, image_size=128)
    assert data_config_of(model)["input_size"] == data_config_of(shipped)["input_size"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in shipped.parameters())
