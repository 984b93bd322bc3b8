"""Make Photoshop-style part composites from real faces: training fakes of the kind the CIPLab set holds.

    python -m train.composites --splits-from models/ensemble --sources ciplab faces140k faces140k-extra \\
        --per-image 3 --out /work/synth/part-composites
    python -m train.composites --reals my_portraits/ --out composites/        # any folder of real photos

The CIPLab "Real and Fake Face Detection" fakes are real portraits whose eyes, nose and/or mouth were pasted in
from other people's photos by hand (the file names say which: left eye, right eye, nose, mouth). There are 546 of
them in our train split, too few to learn the traces such an edit leaves. This stage makes more the same way: for
each real face (the target) it picks another real face of similar colouring (the donor), aligns the donor to the
target by MTCNN's five landmarks (a similarity transform), and pastes the chosen parts through soft elliptic masks
placed on the target's landmarks, after matching the donor's colour to the target's (Reinhard et al. 2001) or with
Poisson blending (OpenCV seamlessClone), as an editor would. Which parts are pasted follows the CIPLab set's mix
(a third of its fakes replace all four). The real side is the target itself, re-encoded exactly as its composites
are, so the only difference a model can learn within a pair is the edit.

Reals are read from a finished run's *train* split (`--splits-from RUN --sources ...`), so no validation or test
face of that run is ever pasted into a training fake, or from folders (`--reals DIR ...`). The output is an image
folder (`real/`, `fake/`) that `--data` takes, with a source.json (what it is, the licences it inherits) and a
manifest.csv (target, donor, parts, blending of every fake) so the set can be rebuilt and audited. Seeded.
"""

import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from deepfake_detector.faces import detect_faces
from deepfake_detector.images import DataError, load_image
from train.config import parse_args
from train.data import read_splits

PROG = "python -m train.composites"
PARTS = ("left_eye", "right_eye", "nose", "mouth")  # image-left / image-right, the CIPLab file names' digit order
# The CIPLab fakes' part codes (left eye, right eye, nose, mouth; 1 = pasted) and how many of its 768 fakes have each
# (../shared/data/ciplab/fake file names): composites are drawn with the same mix.
CIPLAB_MIX = {"1111": 259, "0011": 106, "1100": 90, "1110": 72, "1101": 60, "0001": 29, "0010": 26, "0111": 24,
              "1000": 19, "1011": 17, "1001": 14, "0101": 14, "0100": 13, "1010": 12, "0110": 12}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class CompositeArguments:
    out: str = field(metadata={"help": "Folder to write (real/, fake/, source.json, manifest.csv); must not exist"})
    splits_from: Optional[str] = field(default=None, metadata={
        "help": "A finished run (its splits.json): the reals of its train split are the targets and donors"})
    sources: list[str] = field(default_factory=list, metadata={
        "help": "With --splits-from: the sources whose train reals are used (default: every source)"})
    reals: list[str] = field(default_factory=list, metadata={
        "help": "Folders of real photos (or image folders with a real/ inside) to use instead of --splits-from"})
    per_image: int = field(default=2, metadata={"help": "Composites made from each real face (different donors)"})
    max_images: Optional[int] = field(default=None, metadata={"help": "Use at most this many reals (a sample)"})
    poisson: float = field(default=0.3, metadata={"help": "Share of composites blended with Poisson (seamlessClone)"})
    donor_candidates: int = field(default=8, metadata={
        "help": "The donor is the closest in colouring and head pose of this many random reals (1 = any donor)"})
    min_face: int = field(default=64, metadata={"help": "Skip faces whose eyes are less than this x 0.4 pixels apart"})
    jpeg_quality: int = field(default=95, metadata={"help": "JPEG quality of every written image, real and fake"})
    seed: int = field(default=0, metadata={"help": "Seed of every random choice"})

    def __post_init__(self):
        if bool(self.splits_from) == bool(self.reals):
            raise DataError("Pass either --splits-from RUN (its train reals) or --reals DIR ..., not both or neither.")
        if self.per_image < 1:
            raise DataError("--per-image takes 1 or more composites per real face.")
        if not 0 <= self.poisson <= 1:
            raise DataError("--poisson takes a share between 0 and 1 (e.g. 0.3).")
        if self.donor_candidates < 1:
            raise DataError("--donor-candidates takes 1 or more.")
        if not 1 <= self.jpeg_quality <= 100:
            raise DataError("--jpeg-quality takes a JPEG quality from 1 to 100 (e.g. 95).")
        if os.path.exists(self.out):
            raise DataError(f"{self.out} already exists: pass a new --out folder (nothing is overwritten).")


@dataclass
class Face:
    path: str
    image: np.ndarray  # RGB uint8
    points: np.ndarray  # [5, 2]: the two eyes, the nose tip, the two mouth corners (faces.KEYPOINTS)
    colour: np.ndarray  # mean Lab colour of the cheeks-to-chin region (donor matching)


def real_files(args):
    """The real images to use: a run's train-split reals of --sources, or every image under the --reals folders."""
    if args.splits_from:
        rows = read_splits(args.splits_from)["rows"]["train"]
        known = sorted(set(rows["source"]))
        unknown = [s for s in args.sources if s not in known]
        if unknown:
            raise DataError(f"{args.splits_from} has no source {unknown[0]!r}: its sources are {', '.join(known)}.")
        return [f for f, label, source in zip(rows["file"], rows["label"], rows["source"])
                if label == 1 and (not args.sources or source in args.sources)]
    files = []
    for folder in args.reals:
        if not os.path.isdir(folder):
            raise DataError(f"--reals {folder} is not a folder: pass folders of real photos.")
        folder = os.path.join(folder, "real") if os.path.isdir(os.path.join(folder, "real")) else folder
        files += sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    return files


def find_face(path, min_eye_distance):
    """The largest face of an image with its landmarks, or None (no face, no landmarks, or too small)."""
    try:
        image = load_image(path)
    except DataError:
        return None
    faces = [f for f in detect_faces(image) if f.keypoints]
    if not faces:
        return None
    points = np.array(faces[0].keypoints, dtype=np.float32)
    if np.linalg.norm(points[1] - points[0]) < min_eye_distance:
        return None
    pixels = np.asarray(image)
    return Face(path, pixels, points, face_colour(pixels, points))


def face_colour(pixels, points):
    """Mean Lab colour of the face between the eyes and the mouth (what an editor matches a donor by)."""
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(np.float32)
    x0, x1 = sorted((points[0, 0], points[1, 0]))
    y0, y1 = points[:2, 1].mean(), points[3:, 1].mean()
    h, w = pixels.shape[:2]
    box = lab[max(0, int(y0)):min(h, int(y1) + 1), max(0, int(x0)):min(w, int(x1) + 1)]
    return box.reshape(-1, 3).mean(0) if box.size else lab.reshape(-1, 3).mean(0)


def part_mask(points, parts, shape, rng):
    """A soft mask (float32 in [0, 1], `shape`) over the chosen parts, placed and sized by the landmarks."""
    eye_l, eye_r, nose, mouth_l, mouth_r = points
    d = float(np.linalg.norm(eye_r - eye_l))  # inter-ocular distance: the unit of every size
    angle = math.degrees(math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))
    up = np.array([math.sin(math.radians(angle)), -math.cos(math.radians(angle))])  # towards the forehead
    mask = np.zeros(shape, np.uint8)
    ellipses = []
    for part in parts:
        if part in ("left_eye", "right_eye"):
            eye = eye_l if part == "left_eye" else eye_r
            brow = rng.random() < 0.3  # the eyebrow comes along
            centre = eye + up * d * (0.15 if brow else 0.03)
            axes = (d * rng.uniform(0.28, 0.38), d * (rng.uniform(0.3, 0.38) if brow else rng.uniform(0.16, 0.24)))
        elif part == "nose":
            centre = nose + ((eye_l + eye_r) / 2 - nose) * 0.35
            axes = (d * rng.uniform(0.2, 0.28), d * rng.uniform(0.36, 0.46))
        else:
            centre = (mouth_l + mouth_r) / 2
            axes = (np.linalg.norm(mouth_r - mouth_l) / 2 + d * rng.uniform(0.1, 0.2), d * rng.uniform(0.18, 0.26))
        ellipses.append((centre, axes))
    if len(parts) == 4 and rng.random() < 0.5:  # the whole inner face as one region: the hull of the four parts
        outline = np.concatenate([cv2.ellipse2Poly((int(c[0]), int(c[1])), (int(a[0]), int(a[1])), int(angle), 0,
                                                   360, 10) for c, a in ellipses])
        cv2.fillConvexPoly(mask, cv2.convexHull(outline), 255)
    else:
        for centre, axes in ellipses:
            cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                        (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle, 0, 360, 255, -1)
    sigma = d * rng.uniform(0.04, 0.12)  # feathered edge
    return cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), sigma), mask


def match_colour(donor, target, region):
    """The donor's colours moved to the target's mean and spread over `region` (Lab, Reinhard et al. 2001)."""
    donor_lab = cv2.cvtColor(donor, cv2.COLOR_RGB2LAB).astype(np.float32)
    target_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    inside = region > 0
    mu_d, sd_d = donor_lab[inside].mean(0), donor_lab[inside].std(0) + 1e-3
    mu_t, sd_t = target_lab[inside].mean(0), target_lab[inside].std(0) + 1e-3
    matched = (donor_lab - mu_d) * (sd_t / sd_d) + mu_t
    return cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def composite(target, donor, parts, rng, poisson=0.3):
    """`target` with `parts` of `donor` pasted in: (RGB uint8 image, blending used)."""
    h, w = target.image.shape[:2]
    transform, _ = cv2.estimateAffinePartial2D(donor.points, target.points)
    if transform is None:
        raise ValueError("no similarity transform between the two faces' landmarks")
    warped = cv2.warpAffine(donor.image, transform, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    soft, hard = part_mask(target.points, parts, (h, w), rng)
    if not hard.any():
        raise ValueError("the parts' mask falls outside the image")
    if rng.random() < poisson:
        ys, xs = np.nonzero(hard)
        centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
        # seamlessClone needs the mask clear of the image border; its gradient-domain blend does the colour matching
        hard[:1], hard[-1:], hard[:, :1], hard[:, -1:] = 0, 0, 0, 0
        if hard.any():
            blended = cv2.seamlessClone(warped, target.image, hard, centre, cv2.NORMAL_CLONE)
            return np.ascontiguousarray(blended), "poisson"
    pasted = match_colour(warped, target.image, hard)
    alpha = soft[..., None]
    return (pasted * alpha + target.image * (1 - alpha)).round().astype(np.uint8), "colour-matched"


def pick_donor(target, faces, rng, candidates):
    """Of `candidates` random other faces, the one an editor would pick: similar colouring and head pose (the
    landmarks' misfit after alignment, in inter-ocular distances), so the pasted parts fit."""
    others = [f for f in rng.sample(faces, min(len(faces), candidates + 1)) if f.path != target.path][:candidates]
    d = float(np.linalg.norm(target.points[1] - target.points[0]))

    def misfit(donor):
        transform, _ = cv2.estimateAffinePartial2D(donor.points, target.points)
        if transform is None:
            return math.inf
        moved = donor.points @ transform[:, :2].T + transform[:, 2]
        pose = float(np.linalg.norm(moved - target.points, axis=1).mean()) / d
        return float(np.linalg.norm(donor.colour - target.colour)) / 20 + pose / 0.05

    return min(others, key=misfit)


def write_jpeg(pixels, path, quality):
    Image.fromarray(pixels).save(path, quality=quality)


def main(argv=None):
    (args,) = parse_args(argv, (CompositeArguments,), prog=PROG, description=__doc__)
    rng = random.Random(args.seed)
    files = real_files(args)
    if args.max_images and len(files) > args.max_images:
        files = sorted(rng.sample(files, args.max_images))
    if len(files) < 2:
        raise DataError(f"{len(files)} real images found: composites need at least two (a target and a donor).")
    started = time.time()
    faces = [face for face in (find_face(p, args.min_face * 0.4) for p in files) if face is not None]
    print(f"landmarks: {len(faces)} of {len(files)} reals have a face with landmarks ({time.time() - started:.0f} s)")
    if len(faces) < 2:
        raise DataError("fewer than two of the reals have a face MTCNN finds with landmarks: pass portraits.")
    codes, weights = zip(*CIPLAB_MIX.items())
    partial = args.out + ".partial"
    os.makedirs(os.path.join(partial, "real"), exist_ok=True)
    os.makedirs(os.path.join(partial, "fake"), exist_ok=True)
    manifest = []
    for i, target in enumerate(faces):
        stem = f"{i:05d}-{os.path.splitext(os.path.basename(target.path))[0]}"
        write_jpeg(target.image, os.path.join(partial, "real", stem + ".jpg"), args.jpeg_quality)
        for k in range(args.per_image):
            code = rng.choices(codes, weights)[0]
            parts = [part for part, bit in zip(PARTS, code) if bit == "1"]
            donor = pick_donor(target, faces, rng, args.donor_candidates)
            try:
                pixels, blend = composite(target, donor, parts, rng, args.poisson)
            except (ValueError, cv2.error) as e:
                print(f"skipped a composite of {target.path}: {e}")
                continue
            name = f"{stem}-{k}_{code}.jpg"
            write_jpeg(pixels, os.path.join(partial, "fake", name), args.jpeg_quality)
            manifest.append({"file": f"fake/{name}", "target": target.path, "donor": donor.path, "parts": code,
                             "blend": blend})
    with open(os.path.join(partial, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(manifest[0]) if manifest else ["file"])
        writer.writeheader()
        writer.writerows(manifest)
    inputs = (f"the train-split reals of {', '.join(args.sources) or 'every source'} in {args.splits_from}"
              if args.splits_from else f"the real photos in {', '.join(args.reals)}")
    facts = {"name": os.path.basename(os.path.normpath(args.out)), "classes": ["fake", "real"],
             "family": "Photoshop composite", "collection": f"part-composite targets ({inputs})",
             "what": f"synthetic part composites made by {PROG}: eyes, nose and/or mouth of a similar-looking real "
                     f"face pasted into {inputs}; the reals are the targets, re-encoded alike (JPEG q{args.jpeg_quality})",
             "license": "derived from the input images: their licences apply (mostly research / non-commercial)",
             "command": " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]), "seed": args.seed,
             "reals": len(faces), "fakes": len(manifest)}
    with open(os.path.join(partial, "source.json"), "w") as f:
        json.dump(facts, f, indent=2)
    os.rename(partial, args.out)
    print(f"wrote {len(faces)} reals and {len(manifest)} composites to {args.out} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"{PROG}: error: {e}")
