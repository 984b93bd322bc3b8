"""Checks on what a user hands the app: an upload, two thresholds, a number in a range, a list of files.

Each check returns the value ready to use or raises `DataError` with one sentence that says what to do; the
app shows that sentence as is (a `gr.Error`), never a stack trace.
"""

import base64
import os

from deepfake_detector.images import DataError, load_image

MIN_SIDE = 32  # below this a face has too few pixels to judge (the smallest model input is 48-128 px)
BATCH_MAX_FILES = 100


def upload_source(image):
    """The file behind an upload (a path or bytes; a PIL image as given), so its own bytes can be read: the pixels
    and also the credentials and metadata the file carries (provenance). gr.Image's raw payload is unwrapped."""
    if isinstance(image, dict):  # gr.Image's raw payload: the app's image events skip gradio's preprocessing
        image = image.get("path") or _data_url_bytes(image.get("url"))
    if image is None:
        raise DataError("No image: upload, paste or take a photo (or click an example) first.")
    return image


def read_image(image):
    """An upload (path, bytes, PIL image, or gr.Image's raw payload) as an RGB PIL image."""
    img = load_image(upload_source(image))
    if min(img.size) < MIN_SIDE:
        raise DataError(f"The image is only {img.width}x{img.height} pixels: upload one at least {MIN_SIDE} pixels "
                        "on each side.")
    return img


def frame_count(image):
    """How many frames an upload holds (an animated GIF, WebP or PNG, a multi-page TIFF); 1 when it cannot tell.
    read_image scores the first frame only, and the app says so when this is more than 1."""
    from PIL import Image

    if isinstance(image, dict):
        image = image.get("path")
    if isinstance(image, Image.Image):
        return getattr(image, "n_frames", 1)
    if not isinstance(image, (str, os.PathLike)) or not os.path.isfile(image):
        return 1
    try:
        with Image.open(image) as img:
            return getattr(img, "n_frames", 1)
    except Exception:  # noqa: BLE001 - read_image says what is wrong with an unreadable file
        return 1


def _data_url_bytes(url):
    if not (url or "").startswith("data:"):
        return None
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except ValueError:
        raise DataError("The pasted image could not be decoded: save it to a file and upload that.") from None


def check_thresholds(fake_threshold, real_threshold):
    """{"fake", "real"} from two slider values, which must satisfy 0 ≤ real ≤ fake ≤ 1."""
    fake_threshold, real_threshold = float(fake_threshold), float(real_threshold)
    if not (0.0 <= real_threshold <= fake_threshold <= 1.0):
        raise DataError(f"The thresholds must satisfy 0 ≤ real ({real_threshold:.2f}) ≤ fake ({fake_threshold:.2f}) "
                        "≤ 1: move the sliders so the fake threshold is not below the real one.")
    return {"fake": fake_threshold, "real": real_threshold}


def check_range(value, low, high, what):
    """`value` as an int, if it lies in [low, high]."""
    if value is None or not (low <= float(value) <= high):
        raise DataError(f"{what} must be between {low} and {high} (got {value}).")
    return int(value)


def check_files(files, limit=BATCH_MAX_FILES):
    """The paths of a multi-file upload (gr.File may hand tempfile wrappers), at least one and at most `limit`."""
    files = [getattr(f, "name", f) for f in (files or []) if f]
    if not files:
        raise DataError("No files: upload one or more images.")
    if len(files) > limit:
        raise DataError(f"{len(files)} files is over the {limit}-file limit: split them into smaller batches.")
    return files
