"""A short clip as evenly spaced frames, and the clip's score from its most suspicious frames.

    frames = read_video_frames("clip.mp4", 16)            # [(seconds, RGB PIL image)], DataError on a bad clip
    scored = score_video(detector, frames, top_k=3)       # per-frame P(fake) and the clip's verdict

Decoding is PyAV (FFmpeg). A frame scores as its most suspicious face; the clip as the mean of its `top_k` most
suspicious frames: a fake may show in a few frames only, which an average over all frames would wash out,
while the single worst frame alone is noisy.
"""

import os
from dataclasses import dataclass

import av
import numpy as np

from deepfake_detector.images import DataError
from deepfake_detector.inference import faces_and_crops, score, verdict

VIDEO_MAX_MB, VIDEO_MAX_SECONDS, VIDEO_MAX_FRAMES = 50, 60, 3600  # 3600 = 60 s at 60 fps
FRAME_MAX_SIDE = 1280  # decoded frames are scaled down to this (64 sampled 4K frames would take 1.6 GB)


def read_video_frames(path, count):
    """`count` frames spread evenly over a clip, as [(seconds, RGB PIL image)], or a DataError on a bad clip."""
    if path is None:
        raise DataError("No video: upload a short clip (MP4, WebM, MOV or AVI) first.")
    name = os.path.basename(str(path))
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{name} is empty (0 bytes): upload a video file such as MP4 or WebM.")
    if size > VIDEO_MAX_MB * 1e6:
        raise DataError(f"{name} is {size / 1e6:.0f} MB, over the {VIDEO_MAX_MB} MB limit: trim or compress the clip.")
    try:
        times, duration = _frame_times(path, name)
        start = times[0]
        if duration > VIDEO_MAX_SECONDS:
            raise DataError(f"{name} is {duration:.0f} s long, over the {VIDEO_MAX_SECONDS}-second limit: trim it.")
        if len(times) > VIDEO_MAX_FRAMES:
            raise DataError(f"{name} has {len(times)} frames, over the {VIDEO_MAX_FRAMES}-frame limit: trim it or "
                            "lower its frame rate.")
        picks = sorted({times[min(len(times) - 1, int((i + 0.5) * len(times) / count))] for i in range(count)})
        frames = []
        with av.open(str(path)) as container:  # every frame is decoded (the picked ones depend on those before)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            wanted = iter(picks)
            target = next(wanted)
            for frame in container.decode(stream):
                if frame.pts is None or float(frame.pts * frame.time_base) < target:
                    continue
                frames.append((float(frame.pts * frame.time_base) - start, _frame_image(frame)))
                if (target := next(wanted, None)) is None:
                    break
    except DataError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise DataError(f"{name} is not a video that can be read, or it is corrupt: upload an MP4, WebM, MOV or AVI "
                        "clip.") from None
    if not frames:
        raise DataError(f"{name} is corrupt: none of its frames could be decoded; upload another copy of the clip.")
    return frames


def _frame_image(frame, max_side=FRAME_MAX_SIDE):
    """A decoded frame as an RGB PIL image, at most `max_side` px."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    if scale < 1:
        frame = frame.reformat(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)),
                               format="rgb24")
    return frame.to_image()


def _frame_times(path, name):
    """(when each frame is shown, the clip's duration) in seconds, from its packets alone (nothing decoded)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError(f"{name} has no video track: upload a video clip.")
        stream = container.streams.video[0]
        times = sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None)
        if not times:
            raise DataError(f"{name} holds no video frames: upload another copy of the clip.")
        # What a player shows as the length; the span of the frame times when the container does not say.
        duration = container.duration / av.time_base if container.duration else times[-1] - times[0]
    return times, duration


@dataclass
class ScoredVideo:
    times: list  # seconds of each sampled frame
    frames: list  # the sampled frames (PIL)
    faces: list  # per frame: the faces found (one whole-image Face when none)
    face_p_fake: list  # per frame: P(fake) of each of its faces
    frame_p_fake: np.ndarray  # per frame: its most suspicious face
    worst: np.ndarray  # indexes of the top-k most suspicious frames
    clip_p_fake: float
    verdict: str
    thresholds: dict

    @property
    def frame_verdicts(self):
        return [verdict(p, self.thresholds) for p in self.frame_p_fake]

    @property
    def frames_without_face(self):
        return sum(f[0].whole_image for f in self.faces)


def score_video(detector, sampled, top_k, progress=None):
    """Find and score the faces of every sampled frame; the clip's P(fake) is the mean of the `top_k` worst."""
    owners, crops, found = [], [], []
    frames = [frame for _, frame in sampled]
    for index, frame in enumerate(progress.tqdm(frames, desc="Finding faces") if progress else frames):
        faces, frame_crops = faces_and_crops(frame)
        found.append(faces)
        owners += [index] * len(frame_crops)
        crops += frame_crops
    if progress:
        progress(0.9, desc="Scoring")
    p_faces, _ = score(detector, crops)
    owners = np.array(owners)
    face_p = [p_faces[owners == i] for i in range(len(sampled))]
    frame_p = np.array([p.max() for p in face_p])
    worst = np.argsort(-frame_p, kind="stable")[:min(top_k, len(sampled))]
    clip_p = float(frame_p[worst].mean())
    thresholds = detector.thresholds
    return ScoredVideo([t for t, _ in sampled], frames, found, face_p, frame_p, worst, clip_p,
                       verdict(clip_p, thresholds), thresholds)
