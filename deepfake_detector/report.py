"""How the app words a verdict: P(fake) at the precision the decision needs, the model's track record, and
the summary and table of each feature (Detect, Compare, Video, Batch) with the help texts beside them.

    probability_text(0.2141, {"fake": 0.84, "real": 0.21})   # "0.214": 0.21 would read as "real" by the rule
    track_record(metrics)                                    # "When it says fake it was right 87% ..." or ""
    summary, table = detect_summary(score_faces(detector, img), detector)   # markdown, one row per face

The thresholds are set in steps of 0.01, so two decimals usually say on which side of a threshold a score lies;
when they do not (0.2141 against "real if ≤ 0.21"), more decimals are shown until they do. The track record
comes from the model's metrics.json as training wrote it: how often each verdict was right on validation
(where the thresholds were chosen) and, on the test split, how often the model declined ("uncertain") and how
often its committed verdicts were right. A figure the folder does not hold is left out, never guessed.
"""

import numpy as np
import pandas as pd

from deepfake_detector.card import percent
from deepfake_detector.explain import default_lime_samples
from deepfake_detector.inference import BATCH_COLUMNS, VERDICTS, agreement, verdict
from deepfake_detector.video import VIDEO_MAX_FRAMES, VIDEO_MAX_MB, VIDEO_MAX_SECONDS

DETECT_COLUMNS = ["face", "verdict", "P(fake)", "face found (certainty)", "where (left, top, right, bottom)"]
COMPARE_COLUMNS = ["model", "P(fake)", "verdict", "fake if ≥", "real if ≤", "time (ms)"]
VIDEO_COLUMNS = ["time (s)", "faces", "P(fake)", "verdict"]
BATCH_TABLE = {"file": "file", "faces": "faces", "p_fake": "P(fake)", "verdict": "verdict", "model": "model",
               "provenance": "the file says", "error": "problem"}
# The CSV keeps its column names (and all the provenance columns); the table on screen says a few in words.
HOW_VERDICT = ("**How to read the verdict.** The model gives a calibrated probability that a face is fake. At "
               "or above the *fake* threshold the verdict is **fake**, at or below the *real* threshold **real**, "
               "between them **uncertain**. The defaults come from each model's validation set, where they were "
               "chosen so that its fake and real verdicts were right at a target rate (95 % for the retrained "
               "models, with a margin for the validation set's size), or as often as a weaker model manages; "
               "the summary gives its record. A face detector finds the faces, each cropped with a margin like "
               "the training images; with no face the whole image is scored, less reliably. Each model knows "
               "only the kinds of fake it was trained on (the Models tab lists them): expect poor scores on "
               "other fakes.")
HOW_VIDEO = (f"Frames are sampled evenly over the clip (≤ {VIDEO_MAX_SECONDS} s, ≤ {VIDEO_MAX_MB} MB, ≤ "
             f"{VIDEO_MAX_FRAMES} frames). Each frame scores as its most suspicious face. **Clip verdict = mean "
             "P(fake) of the top-k most suspicious frames**: a fake may show in a few frames only, which an "
             "average over all frames would wash out, while the single worst frame alone is noisy. The "
             "thresholds are the image ones; taking the top frames pushes the score up, so read a *fake* clip "
             "verdict near the threshold with care.")


HOW_PROVENANCE = ("**Two kinds of evidence, kept apart.** The verdict comes from the model alone, from the pixels. "
                  "What the file says about itself (C2PA content credentials; generator metadata such as Stable "
                  "Diffusion or ComfyUI parameters, the IPTC digital source type, EXIF) is shown beside it and never "
                  "changes the verdict. Credentials whose signature validates against a trusted certificate are "
                  "strong evidence of where an image came from; a signature that validates with an unknown "
                  "certificate shows the file is unchanged since signing, not who signed it; unsigned metadata is "
                  "easily written or removed; no metadata proves nothing (most sites strip it). When the two "
                  "disagree, the page says so.")


def probability_text(p, thresholds, digits=2, max_digits=6):
    """`p` with the fewest decimals (at least `digits`) whose rounded value gets the same verdict as `p`."""
    p = float(p)
    for d in range(digits, max_digits + 1):
        shown = round(p, d)
        if verdict(shown, thresholds) == verdict(p, thresholds):
            return f"{shown:.{d}f}"
    return f"{p:.{max_digits}f}"


def threshold_text(value):
    """A threshold as the slider sets it (steps of 0.01); more decimals only when a config holds them."""
    value = float(value)
    return f"{value:.2f}" if abs(value - round(value, 2)) < 1e-9 else f"{value:g}"


def verdict_text(v, p, thresholds):
    """**FAKE** (P(fake) = 0.214), the number at the precision the verdict needs."""
    return f"**{v.upper()}** (P(fake) = {probability_text(p, thresholds)})"


def rule_text(t):
    return (f"fake if P(fake) ≥ {threshold_text(t['fake'])}, real if ≤ {threshold_text(t['real'])}, "
            "uncertain between")


def first_frame_note(frames):
    """What to say when an upload held `frames` frames and only the first was scored ("" for one frame)."""
    return (f"This file holds {frames} frames (an animation or a multi-page image): only the first frame was "
            "scored. To score every frame, save it as a video and use the Video tab.") if frames > 1 else ""


def lime_help(name, timing):
    """The LIME help for model `name`: its default sample count and the time bench/bench_app.py measured for it
    (`explain.read_lime_timing`'s table), or that it was not timed on this machine; never a guess."""
    samples = default_lime_samples(timing, name)
    entry = timing["models"].get(name)
    if entry:
        # Time grows with the count (each sample is one pass), so the measured run scales to the default.
        at_default = entry["seconds_per_sample"] * samples
        scaled = ("" if samples == entry["measured_at_samples"] else
                  f"from {entry['p50_s']:.1f} s at {entry['measured_at_samples']} samples, ")
        measured = (f"{scaled}median of {entry.get('runs', 'several')} runs, measured "
                    f"{timing.get('date') or 'earlier'}")
        over = (f" ({samples} is the fewest that give a usable fit, so it takes longer than the "
                f"{timing['budget_s']:g} s the default aims for)" if at_default > timing["budget_s"] else "")
        said = (f"the default for {name} is {samples} samples: ~{at_default:.1f} s on "
                f"{timing.get('machine') or 'this machine'} ({measured}){over}")
    else:
        said = f"the default for {name} is {samples} samples, not timed on this machine yet"
    return (f"**Samples trade time for steadiness**: each is one pass through the model, so time grows with the "
            f"count; {said}. Fewer give a rougher picture.")


def track_record(metrics):
    """One sentence (markdown) on how often the model is right when it commits and how often it declines, from
    metrics.json; "" when the folder records neither."""
    parts = []
    precision = (metrics.get("thresholds") or {}).get("validation_precision") or {}
    said = [f"{v} {percent(precision[v])}" for v in ("fake", "real") if isinstance(precision.get(v), (int, float))]
    if said:
        parts.append("right when it said " + " / ".join(said) + " on validation")
    overall = (metrics.get("verdicts") or {}).get("overall") or {}
    test_n = overall.get("n")
    if isinstance(overall.get("uncertain_share"), (int, float)):
        parts.append(f"said uncertain on {percent(overall['uncertain_share'])} of {test_n or 'the'} test images")
    if isinstance(overall.get("committed_accuracy"), (int, float)):
        parts.append(f"right on {percent(overall['committed_accuracy'])} of the test images it did not call uncertain")
    if not parts:
        return ""
    return "Track record at its default thresholds: " + "; ".join(parts) + "."


def per_source_record(metrics):
    """[(data set, uncertain share, committed accuracy, images)] from metrics.json's test verdicts, if recorded."""
    rows = []
    for source, m in sorted(((metrics.get("verdicts") or {}).get("per_source") or {}).items()):
        rows.append((source, m.get("uncertain_share"), m.get("committed_accuracy"), m.get("n")))
    return rows


# ---------------------------------------------------------------------------------------------------------
# Each feature's summary (markdown) and table (a DataFrame with the columns the app shows)


def verdict_counts(verdicts):
    """"2 fake, 1 real": how many of each verdict, in the order fake, real, uncertain; "" for none."""
    verdicts = list(verdicts)
    return ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts)


def detect_summary(s, detector, frames=1):
    """inference.ScoredFaces of one image -> (summary markdown, table of DETECT_COLUMNS, a row per face). `frames`:
    how many frames the upload held (only the first was scored)."""
    t = s.thresholds
    if s.faces[0].whole_image:
        lines = [f"No face found: the whole image was scored — {verdict_text(s.verdicts[0], s.p_fake[0], t)}. The "
                 "models were trained on face crops, so this verdict is less reliable."]
    elif len(s.faces) == 1:
        lines = [f"1 face: {verdict_text(s.verdicts[0], s.p_fake[0], t)}"]
    else:
        lines = [f"{len(s.faces)} faces: {verdict_counts(s.verdicts)}", ""]
        lines += [f"- face {i}: {verdict_text(v, p, t)}" for i, (v, p) in enumerate(zip(s.verdicts, s.p_fake), start=1)]
    lines += ["", f"Model **{detector.name}** · {rule_text(t)} · face detection {s.detect_ms:.0f} ms, model "
              f"{s.model_ms:.0f} ms"]
    if record := track_record(detector.metrics):
        default = detector.thresholds
        lines += ["", record if t == default else record + f" (its defaults are {threshold_text(default['fake'])} "
                  f"/ {threshold_text(default['real'])}; you moved the sliders, so this does not apply as is)"]
    if note := first_frame_note(frames):
        lines += ["", note]
    table = pd.DataFrame({
        "face": ["whole image" if f.whole_image else str(i) for i, f in enumerate(s.faces, start=1)],
        "verdict": s.verdicts,
        "P(fake)": [probability_text(p, t) for p in s.p_fake],
        "face found (certainty)": ["–" if f.whole_image else f"{f.confidence:.2f}" for f in s.faces],
        "where (left, top, right, bottom)": [", ".join(map(str, f.box)) for f in s.faces],
    }, columns=DETECT_COLUMNS)
    return "\n".join(lines), table


def compare_summary(rows, detectors, what, frames=1):
    """inference.compare_models rows -> (summary markdown, the rows most suspicious first with what
    render.compare_chart draws, table of COMPARE_COLUMNS). `what`: which face was scored, in words."""
    rows = sorted(rows, key=lambda r: -r["p_fake"])
    for row in rows:
        t = detectors[row["model"]].thresholds
        row.update(p_fake_text=probability_text(row["p_fake"], t), fake_threshold=t["fake"], real_threshold=t["real"])
    table = pd.DataFrame({
        "model": [r["model"] for r in rows], "P(fake)": [r["p_fake_text"] for r in rows],
        "verdict": [r["verdict"] for r in rows], "fake if ≥": [threshold_text(r["fake_threshold"]) for r in rows],
        "real if ≤": [threshold_text(r["real_threshold"]) for r in rows],
        "time (ms)": [f"{r['latency_ms']:.0f}" for r in rows]}, columns=COMPARE_COLUMNS)
    summary = f"{agreement(rows)}\n\nScored {what}; each model uses its own default thresholds (drawn on its bar)."
    if note := first_frame_note(frames):
        summary += "\n\n" + note
    return summary, rows, table


def video_summary(v, detector):
    """video.ScoredVideo -> (summary markdown, P(fake)-over-time data for the chart, table of VIDEO_COLUMNS)."""
    t = v.thresholds
    table = pd.DataFrame({
        "time (s)": [f"{time:.1f}" for time in v.times],
        "faces": [0 if f[0].whole_image else len(f) for f in v.faces],
        "P(fake)": [probability_text(p, t) for p in v.frame_p_fake],
        "verdict": v.frame_verdicts,
    }, columns=VIDEO_COLUMNS)
    # Plain field names for the chart (the browser's plotting library reads "(" in a field name as syntax).
    curve = pd.DataFrame({"seconds": [round(time, 2) for time in v.times],
                          "fake_probability": np.round(v.frame_p_fake, 4)})
    summary = [f"Clip: {verdict_text(v.verdict, v.clip_p_fake, t)} — mean P(fake) of the {len(v.worst)} most "
               f"suspicious of {len(v.times)} sampled frames, model **{detector.name}** ({rule_text(t)})."]
    if record := track_record(detector.metrics):
        summary.append(record + " (on single images; a clip's top-frames score runs higher)")
    if v.frames_without_face:
        summary.append(f"No face found in {v.frames_without_face} frame(s): those were scored as whole frames.")
    return "\n\n".join(summary), curve, table


def batch_summary(rows, detector):
    """inference.score_files rows -> (summary markdown, table of BATCH_TABLE's on-screen columns)."""
    table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    errors = int((table["error"] != "").sum())
    summary = (f"{len(rows)} files with **{detector.name}**: {verdict_counts(table['verdict']) or 'none scored'}"
               + (f"; {errors} could not be read (see the problem column)." if errors else "."))
    stated = int((~table["provenance_kind"].fillna("").isin(["", "none"])).sum())
    if stated:
        summary += (f" {stated} say where they came from (content credentials or generator metadata: see "
                    "'the file says'; it does not change the verdicts).")
    shown = table[list(BATCH_TABLE)].fillna("").rename(columns=BATCH_TABLE)
    shown["P(fake)"] = [probability_text(p, detector.thresholds) if p != "" else "" for p in table["p_fake"]]
    return summary, shown


def provenance_markdown(p, verdicts=()):
    """provenance.Provenance -> the panel beside the verdict: what the file says, how strong that is, the weaker
    evidence, and a sentence when it disagrees with the model's `verdicts` (of the faces), which it never changes."""
    if p.kind == "none":
        return f"**What the file says: nothing.** {p.summary}"
    lines = [f"**What the file says: {p.label}** (strength of evidence: {p.strength})", "", p.summary]
    lines += [f"- Also: {other.summary}" for other in p.others]
    if note := disagreement(p, verdicts):
        lines += ["", note]
    return "\n".join(lines)


def disagreement(p, verdicts):
    """One sentence when the file's own account and the model's verdicts point different ways; "" otherwise."""
    verdicts = set(verdicts)
    if not verdicts or p.signature == "invalid" or p.strength in ("none", "weak"):
        return ""
    if p.hint in ("ai-generated", "ai-edited") and "fake" not in verdicts:
        return ("**The file and the model disagree**: the file says AI made or edited it, the model did not call "
                "it fake. The model has likely not seen this generator; the verdict stays the model's, read it "
                "with the credentials in mind.")
    if p.hint == "camera" and verdicts == {"fake"}:
        return ("**The file and the model disagree**: the file says a camera took it, the model calls it fake. "
                + ("Trusted credentials bind these exact pixels to their signer, so the model may be wrong here."
                   if p.signature == "valid" else "The credentials' signer is not verified, so either may be wrong."))
    return ""
