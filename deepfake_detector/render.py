"""What the app hands back besides text: faces boxed and labelled, images as files, explanation notes, CSV.

    annotated = draw_faces(img, faces, p_fake, verdicts)   # a box and "n: verdict P(fake)" per face
    path = image_file(annotated)                           # a WebP file named by its content (see why below)
"""

import contextlib
import csv
import hashlib
import io
import os
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

COLOURS = {"fake": (220, 38, 38), "real": (22, 163, 74), "uncertain": (217, 119, 6)}
SHOW_MAX_SIDE = 1280  # annotated images are sent back at most this large
IMAGE_DIR = Path(tempfile.gettempdir()) / "deepfake-app-images"
IMAGE_MAX_AGE_S = 3600
_last_prune = [0.0]


def draw_faces(img, faces, p_fake, verdicts, max_side=SHOW_MAX_SIDE):
    """A copy of `img` (at most `max_side` px) with a box and "n: verdict P(fake)" label per face."""
    out = ImageOps.contain(img, (max_side, max_side), Image.BILINEAR) if max(img.size) > max_side else img.copy()
    scale = out.width / img.width
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 200))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 32)))
    for number, (face, p, v) in enumerate(zip(faces, p_fake, verdicts), start=1):
        colour = COLOURS[v]
        x0, y0, x1, y1 = (round(c * scale) for c in face.box)
        label = f"{'whole image' if face.whole_image else number}: {v} {p:.2f}"
        if not face.whole_image:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        height = bottom - top + 2 * line
        y = y0 - height if y0 - height >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((x0, y, x0 + right - left + 2 * line, y + height), fill=colour)
        draw.text((x0 + line - left, y + line - top), label, fill="white", font=font)
    return out


def image_file(img):
    """`img` as a WebP file named by its content, written atomically; files older than an hour are removed.

    Why not return the PIL image: gradio saves each distinct output image to one cache file, rewriting it in
    place, so two requests with the same answer at once (the same example clicked twice) can serve a half-written
    file. A returned path is copied into gradio's cache atomically instead.
    """
    buffer = io.BytesIO()
    img.save(buffer, format="WEBP", quality=90)
    path = IMAGE_DIR / f"{hashlib.sha256(buffer.getvalue()).hexdigest()[:32]}.webp"
    if not path.exists():
        IMAGE_DIR.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        staging.write_bytes(buffer.getvalue())
        os.replace(staging, path)
    else:
        with contextlib.suppress(OSError):
            os.utime(path)  # in use again: not old, whatever its first use
    now = time.time()
    if now - _last_prune[0] > IMAGE_MAX_AGE_S / 6:
        _last_prune[0] = now
        for old in IMAGE_DIR.iterdir():
            with contextlib.suppress(OSError):  # another process may have removed it first
                if now - old.stat().st_mtime > IMAGE_MAX_AGE_S:
                    old.unlink()
    return str(path)


def images_as_files(value):
    """`value` with every PIL image in it (also inside lists and tuples) replaced by its `image_file`."""
    if isinstance(value, Image.Image):
        return image_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(images_as_files(item) for item in value)
    return value


INFO_LABELS = {  # what explain.py's info dicts hold, said for a reader; other keys are not shown
    "member": "explains", "fake_probability": "P(fake) of the face as the model sees it",
    "samples": "perturbed images", "fit_r2": "fit R² (low: the explanation is rough, add samples)",
    "log_odds_contribution": "contribution to the fake log-odds", "seconds": "seconds",
}


def info_markdown(info, note):
    """An explanation's info dict as markdown lines, starting with what was explained (`note`)."""
    lines = [f"Explaining {note}."]
    for key, label in INFO_LABELS.items():
        value = (info or {}).get(key)
        if key == "member" and value == "model":  # not an ensemble: nothing to say
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:+.3f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        if value is not None:
            lines.append(f"- {label}: {value}")
    return "\n".join(lines)


def write_csv(rows, columns, name="verdicts.csv"):
    """`rows` (dicts) as a CSV file in a fresh temporary folder; returns its path."""
    path = os.path.join(tempfile.mkdtemp(prefix="deepfake-batch-"), name)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
