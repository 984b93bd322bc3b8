"""Labels and images: the one way any image enters the project, and the conditions it is degraded to.

    img = load_image("face.jpg")          # RGB PIL image, EXIF rotation applied; DataError says what is wrong
    ID2LABEL[0] == "fake"                 # labels are fixed by name, never by folder order (as in the study)

Training, evaluation and the app all decode through `load_image`, so an upload and a training image are
decoded, rotated and converted to RGB the same way. `DataError` is the one error type for a problem with the
user's data: its message is one line that says what to do.
"""

import io
import os

import numpy as np
from PIL import Image, ImageFile, ImageFilter, ImageOps, UnidentifiedImageError

ID2LABEL = {0: "fake", 1: "real"}
LABEL2ID = {name: i for i, name in ID2LABEL.items()}
MAX_PIXELS = 100_000_000  # larger images are refused before decoding (decompression bombs)

# We check the pixel count ourselves from the header, with a clear message; PIL's own guard would only warn.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DataError(ValueError):
    """A problem with the user's data, said in one line that tells them what to do."""


# ---------------------------------------------------------------------------------------------------------
# One image in


def open_image(source, *, max_pixels=MAX_PIXELS):
    """Open an image lazily (header only) from a path, bytes, file object or PIL image; check its size."""
    if isinstance(source, Image.Image):
        return source
    name = source if isinstance(source, (str, os.PathLike)) else "the image"
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise DataError("The file is empty (0 bytes): upload an image file such as JPEG or PNG.")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
        raise DataError(f"{os.path.basename(name)} is empty (0 bytes): upload an image file such as JPEG or PNG.")
    try:
        img = Image.open(source)
    except UnidentifiedImageError:
        raise DataError(f"{_short(name)} is not an image this app can read: upload a JPEG, PNG, WebP, BMP, TIFF or GIF.")
    except OSError as e:
        raise DataError(f"{_short(name)} could not be opened ({e}): upload another copy of the image.")
    width, height = img.size
    if width * height > max_pixels:
        raise DataError(
            f"{_short(name)} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
            f"{max_pixels / 1e6:.0f}-megapixel limit: downscale it before uploading."
        )
    return img


def load_image(source, *, max_pixels=MAX_PIXELS):
    """Decode an image fully as RGB: first frame of animations, EXIF orientation applied, any mode converted."""
    img = open_image(source, max_pixels=max_pixels)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{_short(getattr(img, 'filename', '') or 'The image')} is corrupt or truncated ({e}): "
                        "re-export or re-download it.")
    return to_rgb(img)


def to_rgb(img):
    """Convert any PIL mode to 8-bit RGB; transparent areas become white, 16-bit and float images are rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # PIL's convert("RGB") clips these at 255 (mostly white): rescale the real range to 0..255 instead.
        pixels = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def reencode_jpeg(img, quality):
    """Put an image through one JPEG encoding, so no class can be told apart by file format alone."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def degrade(img, kind):
    """The poor-quality conditions we train with and report robustness on."""
    if kind == "clean":
        return img
    if kind.startswith("jpeg_q"):
        return reencode_jpeg(img, int(kind[len("jpeg_q"):]))
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=1.5))
    if kind.startswith("downscale_"):
        side = int(kind[len("downscale_"):])
        small = img.resize((side, max(1, round(side * img.height / img.width))), Image.BILINEAR)
        return small.resize(img.size, Image.BILINEAR)
    raise ValueError(f"unknown degradation {kind!r}")


ROBUSTNESS = ("clean", "jpeg_q90", "jpeg_q75", "jpeg_q50", "blur", "downscale_64")


def _short(name):
    return os.path.basename(str(name)) if name else "The image"
