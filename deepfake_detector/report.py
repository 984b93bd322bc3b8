"""How the app words a verdict: P(fake) at the precision the decision needs, and the model's track record.

    probability_text(0.2141, {"fake": 0.84, "real": 0.21})   # "0.214": 0.21 would read as "real" by the rule
    track_record(metrics)                                    # "When it says fake it was right 87 % ..." or ""

The thresholds are set in steps of 0.01, so two decimals usually say on which side of a threshold a score lies;
when they do not (0.2141 against "real if ≤ 0.21"), more decimals are shown until they do. The track record
comes from the model's metrics.json as training wrote it: how often each verdict was right on validation
(where the thresholds were chosen) and, on the test split, how often the model declined ("uncertain") and how
often its committed verdicts were right. A figure the folder does not hold is left out, never guessed.
"""

import json

from deepfake_detector.inference import verdict


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


def lime_help(default_samples, timing_path):
    """The LIME help, quoting the time bench/bench_app.py measured for the default (its lime_timing.json), or
    saying it was not measured; never a guess."""
    try:
        with open(timing_path) as f:
            timing = json.load(f)
    except (OSError, ValueError):
        timing = {}
    if timing.get("samples") == default_samples and {"p50_s", "p95_s", "runs", "model", "machine"} <= set(timing):
        measured = (f"{default_samples} samples (the default) took {timing['p50_s']:.1f} s (median of "
                    f"{timing['runs']} runs, 95th percentile {timing['p95_s']:.1f} s) for the {timing['model']} on "
                    f"{timing['machine']}, measured {timing.get('date', 'earlier')}")
    else:
        measured = f"{default_samples} samples (the default) have not been timed on this machine yet"
    return (f"**Samples trade time for steadiness**: each is one pass through the model, so time grows with the "
            f"count: {measured}. Fewer give a rougher picture.")


def percent(share):
    return f"{100 * share:.0f} %"


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
