"""What the app hands back besides text: faces boxed and labelled, images as files, explanation notes, CSV.

    annotated = draw_faces(img, faces, p_fake, verdicts)   # a box and "n: verdict P(fake)" per face
    annotated = draw_scored(img, faces, p_fake, thresholds)   # the same, verdicts and wording from the thresholds
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

from deepfake_detector.inference import verdict
from deepfake_detector.report import probability_text

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
        shown = p if isinstance(p, str) else f"{p:.2f}"  # the caller may pass P(fake) already worded
        label = f"{'whole image' if face.whole_image else number}: {v} {shown}"
        if not face.whole_image:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        height = bottom - top + 2 * line
        y = y0 - height if y0 - height >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((x0, y, x0 + right - left + 2 * line, y + height), fill=colour)
        draw.text((x0 + line - left, y + line - top), label, fill="white", font=font)
    return out


def draw_scored(img, faces, p_fake, thresholds, max_side=SHOW_MAX_SIDE):
    """draw_faces with each face's verdict at `thresholds` and its P(fake) at the precision that verdict needs."""
    return draw_faces(img, faces, [probability_text(p, thresholds) for p in p_fake],
                      [verdict(p, thresholds) for p in p_fake], max_side)


def suspicious_frames(v, max_side=640):
    """video.ScoredVideo's top-k frames in time order, faces drawn -> [(image, "1.2 s · P(fake) 0.91")]."""
    return [(draw_scored(v.frames[i], v.faces[i], v.face_p_fake[i], v.thresholds, max_side),
             f"{v.times[i]:.1f} s · P(fake) {probability_text(v.frame_p_fake[i], v.thresholds)}")
            for i in sorted(v.worst)]


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


def compare_chart(rows):
    """A bar per model (in the order of `rows`, top to bottom) of its P(fake), coloured by its verdict, with the
    model's own thresholds drawn across its bar: rows hold model, p_fake, verdict, fake_threshold,
    real_threshold. -> RGB PIL image."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 0.7 * len(rows) + 1.1), dpi=100)
    axes = figure.add_subplot()
    positions = list(range(len(rows)))[::-1]  # the first row on top, as in the table
    for y, row in zip(positions, rows):
        colour = "#%02x%02x%02x" % COLOURS[row["verdict"]]
        axes.barh(y, row["p_fake"], height=0.6, color=colour)
        axes.text(row["p_fake"] + 0.01, y, f"{row['p_fake_text']} {row['verdict']}", va="center",
                  fontsize=9)
        for key, style in (("fake_threshold", "#dc2626"), ("real_threshold", "#16a34a")):
            axes.plot([row[key]] * 2, [y - 0.4, y + 0.4], color=style, linewidth=2, linestyle="--")
    axes.set_yticks(positions, [row["model"] for row in rows])
    axes.set_xlim(0, 1.2)  # room for the label after a bar near 1
    axes.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.set_xlabel("P(fake) — dashed: the model's thresholds (red: fake at or above, green: real at or below)",
                    fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def stack_images(images, gap=8):
    """Images one above the other on white, left-aligned."""
    if len(images) == 1:
        return images[0]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                       "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas
