"""How fast is the app on this machine? Cold start, per-feature latency on CPU, and a short load test.

    python bench/bench_app.py                                  # writes bench/out/app.json and bench/lime_timing.json
    python bench/bench_app.py --shipped-architectures --clients 20 --seconds 30 --repeats 20
    python bench/bench_app.py --lime-only --model dinov2=runs/dinov2 --machine "the Space's 2 CPU cores"  # step 4 only

1. Cold start: `python app.py --model ...` in a fresh process (offline) until it serves the page, and until its
   first /detect answer (the models load behind the page, so that one includes loading them).
2. Latency, in this process on the plain functions: p50 / p95 of detect (each model), compare, Grad-CAM and
   the feature maps on the default model, for one example photo.
3. Load: `--clients` gradio_client clients, each in its own thread, call /detect back to back for `--seconds`
   against the app of step 1 (127.0.0.1 only): requests done, errors (should be 0), p50 / p95.
4. LIME, for every model served: app.explain_lime at `--lime-samples` (64) on the photo, p50 of `--lime-repeats`
   runs, divided by the count: seconds per sample (face detection and superpixels included, so a little high).
   Written to bench/lime_timing.json with each model's default, as many samples as fit in the app's budget
   (explain.budgeted_samples: 5 s, 20 to 64), which the app's Explain tab starts at and its help quotes.

Serves the models of models/models.json (trained, in models/, when there are any, else or with
--shipped-architectures untrained models built to their recipes), plus any --model NAME=FOLDER. Say with
--machine what machine the figures come from: the app quotes it.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "real-flickr.jpg"  # a held-out test face (examples/examples.json)
LIME_TIMING = ROOT / "bench" / "lime_timing.json"  # what the app's LIME help says; rewritten by every run


def model_names():
    """The names of the models the app serves (models/models.json)."""
    from deepfake_detector.registry import read_config

    return [entry.name for entry in read_config()]


def find_models(folder, shipped_architectures=False):
    """{name: folder} of the trained models of models.json in `folder`; when there are none, or with
    `shipped_architectures`, untrained models built to the shipped recipes of models/ (real timings, meaningless
    verdicts)."""
    found = {n: str(Path(folder) / n) for n in model_names() if (Path(folder) / n / "config.json").is_file()}
    if found and not shipped_architectures:
        return found, f"trained ({folder})"
    return untrained_shipped(tempfile.mkdtemp(prefix="bench-app-models-")), "untrained, the shipped recipes of models/"


def untrained_shipped(root):
    """Random-weight models built to each shipped folder's config.json (architecture, width, input size), saved
    like a training run, with verdict thresholds 0.6 / 0.4."""
    from deepfake_detector.layout import save_model
    from deepfake_detector.models import create_like

    return {name: save_model(create_like(ROOT / "models" / name).eval(), os.path.join(root, name),
                             thresholds={"fake": 0.6, "real": 0.4})
            for name in model_names() if (ROOT / "models" / name / "config.json").is_file()}


def percentiles(milliseconds):
    values = np.asarray(milliseconds, dtype=float)
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1)}


def timed(function, repeats, warmup=1):
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append((time.perf_counter() - start) * 1000)
    return percentiles(timings)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models, port):
    """`python app.py` on the models, offline; returns (process, seconds to the first /detect answer, client)."""
    from gradio_client import Client, handle_file

    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    for name, folder in models.items():
        command += ["--model", f"{name}={folder}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(tempfile.mktemp(prefix="bench-app-", suffix=".log"), "w")
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    page = None
    while page is None:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode}: see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.status == 200 and time.perf_counter() - start
        except OSError:  # not listening yet
            if time.perf_counter() - start > 300:
                process.terminate()
                raise SystemExit(f"the app did not serve its page within 300 s: see {log.name}")
            time.sleep(0.1)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode}: see {log.name}")
        try:
            client = Client(url, verbose=False)
            break
        except Exception:  # not listening yet
            if time.perf_counter() - start > 300:
                process.terminate()
                raise SystemExit(f"the app did not answer within 300 s: see {log.name}")
            time.sleep(0.25)
    up = time.perf_counter() - start
    client.predict(handle_file(str(PHOTO)), next(iter(models)), 0.6, 0.4, api_name="/detect")
    return process, {"page_served_s": round(page, 2), "server_up_s": round(up, 2),
                     "first_prediction_s": round(time.perf_counter() - start, 2)}, url


def latency(models, repeats):
    """p50 / p95 of each feature's plain function, in this process (no HTTP)."""
    import app

    detectors = app.load_detectors(models)
    name = app.default_model(detectors)
    photo = str(PHOTO)
    result = {f"detect ({n})": timed(lambda n=n: app.detect(detectors, photo, n, 0.6, 0.4), repeats) for n in detectors}
    result["compare (all models)"] = timed(lambda: app.compare(detectors, photo), max(3, repeats // 2))
    result[f"Grad-CAM ({name})"] = timed(lambda: app.explain_gradcam(detectors, photo, name), max(3, repeats // 2))
    layer = "stage 2"
    result[f"inside the model ({name}, {layer})"] = timed(lambda: app.inside_model(detectors, photo, name, layer),
                                                          max(3, repeats // 2))
    return name, result


def load_test(url, model, clients, seconds):
    """`clients` threads, one gradio_client each, calling /detect until `seconds` have passed."""
    from gradio_client import Client, handle_file

    timings, errors, lock = [], [], threading.Lock()
    ready = threading.Barrier(clients + 1)

    def worker():
        client = Client(url, verbose=False)
        ready.wait()
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(PHOTO)), model, 0.6, 0.4, api_name="/detect")
                with lock:
                    timings.append((time.perf_counter() - start) * 1000)
            except Exception as e:  # counted and reported: the figure we want is how many
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

    deadline = float("inf")  # set once every client has connected
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    deadline = time.perf_counter() + seconds
    for thread in threads:
        thread.join(timeout=seconds + 600)
    return {"clients": clients, "seconds": seconds, "requests_done": len(timings), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_s": round(len(timings) / seconds, 2),
            **percentiles(timings or [0])}


def lime_per_model(models, samples, repeats):
    """{name: LIME's seconds per sample, its budgeted default, p50 / p95} for every model, app.explain_lime on
    the photo at `samples` (after one warm-up each)."""
    import app
    from deepfake_detector.explain import budgeted_samples

    detectors, photo, table = app.load_detectors(models), str(PHOTO), {}
    for name in detectors:
        t = timed(lambda name=name: app.explain_lime(detectors, photo, name, samples, progress=None), repeats)
        seconds_per_sample = t["p50_ms"] / 1000 / samples
        table[name] = {"seconds_per_sample": round(seconds_per_sample, 5),
                       "samples": budgeted_samples(seconds_per_sample),
                       "p50_s": round(t["p50_ms"] / 1000, 2), "p95_s": round(t["p95_ms"] / 1000, 2), "runs": t["n"],
                       "measured_at_samples": samples}
        print(f"LIME {name}: {table[name]}", file=sys.stderr)
    return table


def write_lime_timing(path, table, machine, which, extra):
    """The per-model table the app's Explain tab reads (explain.read_lime_timing): every model measured here."""
    from deepfake_detector.explain import LIME_BUDGET_S

    command = " ".join(["python bench/bench_app.py", *(f"--model {spec}" for spec in extra)])
    with open(path, "w") as f:
        json.dump({"budget_s": LIME_BUDGET_S, "machine": machine, "date": time.strftime("%Y-%m-%d"),
                   "measured_by": command, "weights": which, "photo": str(PHOTO.relative_to(ROOT)),
                   "models": table}, f, indent=2)
        f.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "models"),
                        help="Folder holding the trained folders of models/models.json (tuned-cnn/, ...)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="Also serve (and time) this model folder; repeat for several")
    parser.add_argument("--repeats", type=int, default=20, help="Timed calls of detect (fewer for the slower ones)")
    parser.add_argument("--clients", type=int, default=20, help="Concurrent gradio_client clients in the load test")
    parser.add_argument("--seconds", type=float, default=30, help="Length of the load test")
    parser.add_argument("--shipped-architectures", action="store_true",
                        help="Time untrained models built to the shipped recipes even where trained ones exist")
    parser.add_argument("--lime-samples", type=int, default=64,
                        help="LIME sample count each model is timed at (step 4); seconds per sample = p50 / this")
    parser.add_argument("--lime-repeats", type=int, default=5, help="Timed LIME calls per model (after one warm-up)")
    parser.add_argument("--lime-only", action="store_true",
                        help="Only step 4: time LIME on every model and write the LIME timing, nothing else")
    parser.add_argument("--lime-timing", default=str(LIME_TIMING),
                        help="Where to write the per-model LIME table (the app reads bench/lime_timing.json)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "out" / "app.json"))
    parser.add_argument("--machine", help="how to describe this machine in bench/lime_timing.json (what the app's "
                                          "LIME help says), e.g. \"the Space's 2 CPU cores, nothing else running\"")
    args = parser.parse_args(argv)
    if not all("=" in spec for spec in args.model):
        parser.error("--model takes NAME=FOLDER, e.g. --model dinov2=runs/dinov2")

    models, which = find_models(args.models, args.shipped_architectures)
    models.update(spec.split("=", 1) for spec in args.model)
    load = os.getloadavg()
    result = {"models": which, "extra_models": args.model, "cpu_cores": os.cpu_count(), "load_average_at_start": load}
    if not args.lime_only:
        process, result["cold_start"], url = start_server(models, free_port())
        try:
            name, result["latency"] = latency(models, args.repeats)
            result["latency_model"] = name
            result["load"] = load_test(url, name, args.clients, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
    result["lime"] = lime_per_model(models, args.lime_samples, args.lime_repeats)
    write_lime_timing(args.lime_timing, result["lime"], args.machine or
                      f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} at the start", which, args.model)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
