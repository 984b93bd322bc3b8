"""Tests of hub/: the local test Hub itself, model cards, push, pull and the Space files. No network.

    python -m pytest tests/test_hub.py -x -q

Everything talks to the session's LocalHub (tests/conftest.py); nothing here needs trained models.
"""

import copy
import json
import logging
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, SpaceCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import save_file

from hub.__main__ import main
from deepfake_detector.card import model_card
from hub.space import refresh_space_header, space_front_matter, split_front_matter, update_front_matter
from deepfake_detector.registry import ModelEntry, ModelUnavailableError, load_models, resolve_model
from hub.push import push_model, space_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent

METRICS = {
    "model": "xception", "architecture": "legacy_xception", "library_name": "timm",
    "pretrained": False, "base_model": None, "image_size": 128, "labels": {"0": "fake", "1": "real"},
    "data": {"sources": ["../shared/data/faces140k", "../shared/data/ciplab"], "datasets": ["faces140k", "ciplab"],
             "counts": {"train": {"fake": 1100, "real": 1180}, "validation": {"fake": 230, "real": 250},
                        "test": {"fake": 238, "real": 235}}},
    "test": {"n": 473, "accuracy": 0.8123456, "weighted_recall": 0.8120001, "auc": 0.8876543,
             "ece_before": 0.0812, "ece_after": 0.0311, "confusion_matrix": [[190, 48], [41, 194]],
             "classification_report": {
                 "fake": {"precision": 0.8225, "recall": 0.7983, "f1-score": 0.8102, "support": 238.0},
                 "real": {"precision": 0.8017, "recall": 0.8255, "f1-score": 0.8134, "support": 235.0},
                 "accuracy": 0.8123456,
                 "macro avg": {"precision": 0.8121, "recall": 0.8119, "f1-score": 0.8118, "support": 473.0},
                 "weighted avg": {"precision": 0.8122, "recall": 0.8120001, "f1-score": 0.8118, "support": 473.0}}},
    "per_source": {"faces140k": {"n": 320, "accuracy": 0.8531, "auc": 0.9212},
                   "ciplab": {"n": 153, "accuracy": 0.7271, "auc": 0.7764}},
    "robustness": {"clean": {"accuracy": 0.8123, "auc": 0.8901}, "jpeg_q90": {"accuracy": 0.8011, "auc": 0.88},
                   "jpeg_q75": {"accuracy": 0.7788, "auc": 0.86}, "jpeg_q50": {"accuracy": 0.7301, "auc": 0.8},
                   "blur": {"accuracy": 0.6902, "auc": 0.75}, "downscale_64": {"accuracy": 0.6555, "auc": 0.7}},
    "temperature": 1.37, "thresholds": {"fake": 0.7, "real": 0.3},
    "training": {"epochs": 30, "epochs_run": 30, "best_epoch": 22, "wall_time_s": 5123.4, "train_images_per_s": 13.7,
                 "device": "cpu (2 cores)", "seed": 0,
                 "command": "python -m train --data ../shared/data/faces140k ../shared/data/ciplab --model xception "
                            "--image-size 128 --epochs 30 --output runs/xception"},
    "inference": {"cpu_ms_per_image": 41.9},
    "extra_evaluations": {"faces140k-extra": {"n": 780, "accuracy": 0.7912, "auc": 0.8601}},
    "files": ["confusion_matrix.png", "roc.png", "training_curves.png"],
}
MODEL_FILES = [".gitattributes", "README.md", "config.json", "metrics.json", "model.safetensors"]


# ---- helpers -----------------------------------------------------------------------------------------------
@pytest.fixture
def model_folder(tmp_path):
    """What training writes: timm-style config, safetensors weights, metrics; plus a checkpoint not to push."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = {"architecture": "legacy_xception", "num_classes": 2, "label_names": ["fake", "real"]}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"fc.weight": torch.arange(4.0).reshape(2, 2), "fc.bias": torch.zeros(2)}, folder / "model.safetensors")
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"resume state, pickled")
    return folder


def run_cli(*args, env=None):
    """`python -m hub ...` in a fresh process from the project root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "hub", *map(str, args)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def cli_error(capsys, *args) -> tuple[int, str]:
    """Exit code and stderr of an in-process `hub` command."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


# ---- the local Hub ---------------------------------------------------------------------------------------
def test_local_hub_speaks_enough_hub(local_hub, hub_repo_id, tmp_path):
    api = HfApi()
    api.create_repo(hub_repo_id, exist_ok=True)
    api.create_repo(hub_repo_id, exist_ok=True)
    (tmp_path / "config.json").write_text('{"v": 1}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("nested")
    first = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path)
    (tmp_path / "config.json").write_text('{"v": 2}')
    api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path)

    assert api.list_repo_files(hub_repo_id) == [".gitattributes", "config.json", "sub/notes.txt"]
    snapshot = Path(snapshot_download(hub_repo_id))
    assert (snapshot / "config.json").read_text() == '{"v": 2}'
    assert (snapshot / "sub" / "notes.txt").read_text() == "nested"
    old = hf_hub_download(hub_repo_id, "config.json", revision=first.oid)
    assert Path(old).read_text() == '{"v": 1}'
    assert local_hub.files(hub_repo_id, first.oid)["config.json"] == b'{"v": 1}'
    assert len(local_hub.history(hub_repo_id)) == 3  # creation + two uploads
    assert not local_hub.unhandled


def test_local_hub_errors_are_the_hub_errors(hub_repo_id):
    HfApi().create_repo(hub_repo_id)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(hub_repo_id, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("local-user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("local-user/does-not-exist", "config.json")


# ---- model card --------------------------------------------------------------------------------------------
def test_card_metadata_parses_back():
    card = ModelCard(model_card(METRICS, repo_id="someone/deepfake-xception"))
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "cc-by-nc-4.0"
    assert data["library_name"] == "timm"
    assert data["datasets"] == ["faces140k", "ciplab"]
    assert "base_model" not in data
    [model_index] = data["model-index"]
    assert model_index["name"] == "deepfake-xception"
    test_result, extra_result = model_index["results"]
    scores = {m["type"]: m["value"] for m in test_result["metrics"]}
    assert scores == {"accuracy": 0.8123456, "recall": 0.8120001, "roc_auc": 0.8876543}
    assert extra_result["dataset"]["name"] == "faces140k-extra"
    assert {m["type"]: m["value"] for m in extra_result["metrics"]} == {"accuracy": 0.7912, "roc_auc": 0.8601}


def test_card_sections_come_from_the_metrics():
    text = model_card(METRICS, repo_id="someone/deepfake-xception")
    for heading in ["# deepfake-xception", "## Intended use and misuse", "## Training data", "## Evaluation",
                    "### Classification report", "### Confusion matrix", "### Per source", "### Robustness",
                    "## Limitations", "## How to use", "## Training details", "## Reproduce"]:
        assert f"\n{heading}\n" in text, heading
    assert "| Accuracy | 0.8123 |" in text
    assert "| ECE after calibration | 0.0311 |" in text
    assert "| fake | 0.8225 | 0.7983 | 0.8102 | 238 |" in text
    assert "| fake | 190 | 48 |" in text and "| real | 41 | 194 |" in text
    assert "| `ciplab` | 153 | 0.7271 | 0.7764 |" in text
    assert "| JPEG quality 50 | 0.7301 | 0.8000 | -0.0822 |" in text
    assert "| train | 1100 | 1180 | 2280 |" in text
    assert "![Confusion matrix](confusion_matrix.png)" in text
    assert 'pipeline("image-classification", model="someone/deepfake-xception", trust_remote_code=True)' in text
    assert "processing_deepfake_faces.py" in text and "pass a face crop" in text
    assert 'timm.create_model("hf-hub:someone/deepfake-xception"' in text
    assert f"```bash\n{METRICS['training']['command']}\n```" in text
    assert "CC BY-NC-SA 4.0" in text and "diffusion" in text
    assert "## What was tried" not in text  # only when metrics.json carries notes


def test_card_says_how_often_verdicts_were_right():
    thresholds = {"fake": 0.8, "real": 0.24, "target_precision": 0.85, "validation_precision": {"fake": 0.87, "real": 0.8333}}
    text = model_card(dict(METRICS, thresholds=thresholds))
    assert "decision thresholds `fake`: 0.8, `real`: 0.24, `target_precision`: 0.85; verdicts right on validation: fake 87%, real 83%." in text


def test_card_reports_uncertain_share_and_committed_accuracy_per_source():
    verdicts = {"thresholds": {"fake": 0.8, "real": 0.24},
                "overall": {"n": 473, "uncertain_share": 0.1234, "committed": 415, "committed_accuracy": 0.9566},
                "per_source": {"ciplab": {"n": 153, "uncertain_share": 0.3, "committed": 107,
                                          "committed_accuracy": 0.8785}}}
    text = model_card(dict(METRICS, verdicts=verdicts))
    assert "\n### Verdicts at the model's thresholds\n" in text
    assert "fake if P(fake) ≥ 0.80, real if ≤ 0.24" in text
    assert "| `ciplab` | 153 | 30% | 88% |" in text and "| all | 473 | 12% | 96% |" in text
    assert "### Verdicts at the model's thresholds" not in model_card(METRICS)


def test_report_md_is_rendered_by_the_card_sections():
    from train.evaluate import report_markdown

    report, text = report_markdown(METRICS), model_card(METRICS)
    assert report.startswith("# xception — run report\n\nReproduce with:")
    for block in ("| `ciplab` | 153 | 0.7271 | 0.7764 |", "| JPEG quality 50 | 0.7301 | 0.8000 | -0.0822 |",
                  "| train | 1100 | 1180 | 2280 |"):
        assert block in report and block in text


def test_card_lists_what_was_tried():
    metrics = dict(METRICS, notes=["Mixup: no gain (0.79 vs 0.80).", "", "Native-resolution crops: +0.02 AUC."])
    text = model_card(metrics)
    assert "\n## What was tried\n\n- Mixup: no gain (0.79 vs 0.80).\n- Native-resolution crops: +0.02 AUC.\n" in text
    assert text.index("## What was tried") < text.index("## Reproduce")


def test_card_limitations_follow_the_training_sets():
    # A fake kind a set covers is no longer listed as unseen; the cards of faces140k-only models still list it.
    only_faces = model_card(dict(METRICS, data={"datasets": ["faces140k"]}))
    assert "- images from diffusion models (Stable Diffusion" in only_faces and "- newer GANs (StyleGAN2/3)" in only_faces
    six = model_card(dict(METRICS, data={"datasets": ["faces140k", "stylegan2-thumbs", "lfw-faceswap", "sd-people"]}))
    assert "Stable Diffusion 1.x portraits" in six and "StyleGAN2 generated faces" in six
    assert "- images from diffusion models other than Stable Diffusion 1.x" in six and "StyleGAN2/3" not in six
    assert "`sd-people`: Stable Diffusion 1.4/1.5 people" in six


def test_card_without_optional_keys_leaks_no_none_or_nan():
    metrics = copy.deepcopy(METRICS)
    metrics["test"].update(auc=float("nan"), ece_before=None)
    del metrics["robustness"], metrics["per_source"], metrics["files"], metrics["training"]["command"]
    text = model_card(metrics)
    assert not re.search(r"\b(None|nan|NaN|null)\b", text)
    assert "### Robustness" not in text and "## Reproduce" not in text and "](confusion_matrix.png)" not in text
    scores = {m["type"] for m in ModelCard(text).data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert scores == {"accuracy", "recall"}

    bare = model_card({})
    assert not re.search(r"\b(None|nan|null)\b", bare)
    assert ModelCard(bare).data.to_dict()["license"] == "cc-by-nc-4.0"
    assert "## Evaluation" not in bare and "## Intended use and misuse" in bare


def test_card_base_model_only_when_pretrained():
    finetuned = {**METRICS, "pretrained": True, "base_model": "timm/legacy_xception.tf_in1k"}
    assert ModelCard(model_card(finetuned)).data.to_dict()["base_model"] == "timm/legacy_xception.tf_in1k"
    scratch = {**METRICS, "pretrained": False, "base_model": "timm/legacy_xception.tf_in1k"}
    assert "base_model" not in ModelCard(model_card(scratch)).data.to_dict()


def test_ensemble_card_uses_transformers_and_remote_code():
    metrics = {**METRICS, "model": "ensemble", "architecture": "ensemble", "library_name": "transformers"}
    text = model_card(metrics, repo_id="someone/deepfake-ensemble")
    assert ModelCard(text).data.to_dict()["library_name"] == "transformers"
    assert 'model="someone/deepfake-ensemble", trust_remote_code=True)' in text
    assert "timm.create_model" not in text



def test_card_says_how_stacked_ensembles_and_probes_were_made():
    stacked = {**METRICS, "model": "ensemble", "pretrained": False, "members": ["runs/probe", "runs/efficientnet-lite2/"]}
    text = model_card(stacked)
    assert "combines frozen trained members (`probe`, `efficientnet-lite2`)" in text
    assert "from scratch" not in text
    probe = {**METRICS, "pretrained": True, "base_model": "facebook/dinov2-small",
             "members": ["dinov2-vits14 (pretrained, frozen)"], "probe": {"layers": [9, 10, 11]}}
    text = model_card(probe)
    assert "over the features of dinov2-vits14 (pretrained, frozen) read at blocks 9, 10, 11" in text
    assert "fine-tuned" not in text.split("## ")[0]

# ---- push --------------------------------------------------------------------------------------------------
def test_push_cli_uploads_the_folder_with_a_card(local_hub, hub_repo_id, hub_token, model_folder):
    local_hub.requests.clear()
    result = run_cli("push", model_folder, "--repo-id", hub_repo_id)

    assert result.returncode == 0, result.stderr
    assert local_hub.list_files(hub_repo_id) == MODEL_FILES
    files = local_hub.files(hub_repo_id)
    assert files["model.safetensors"] == (model_folder / "model.safetensors").read_bytes()
    assert files["README.md"].decode() == model_card(METRICS, repo_id=hub_repo_id)
    creation, commit = local_hub.history(hub_repo_id)[-1], local_hub.history(hub_repo_id)[0]
    assert len(local_hub.history(hub_repo_id)) == 2, "one commit for the whole folder"
    assert f"commit {commit.oid}" in result.stdout
    assert f"{local_hub.url}/{hub_repo_id}" in result.stdout
    assert list(creation.files) == [".gitattributes"]
    writes = [r for r in local_hub.requests if r.method == "POST"]
    assert writes and {r.authorization for r in writes} == {f"Bearer {hub_token}"}
    assert hub_token not in result.stdout + result.stderr


def test_push_keeps_an_existing_card(local_hub, hub_repo_id, model_folder, capsys):
    (model_folder / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\nmy own card\n")
    assert main(["push", str(model_folder), "--repo-id", hub_repo_id]) == 0
    assert local_hub.files(hub_repo_id)["README.md"] == b"---\nlicense: cc-by-nc-4.0\n---\nmy own card\n"
    assert "kept the existing model card" in capsys.readouterr().out

    assert main(["push", str(model_folder), "--repo-id", hub_repo_id, "--overwrite-card"]) == 0
    assert local_hub.files(hub_repo_id)["README.md"].decode() == model_card(METRICS, repo_id=hub_repo_id)


def test_push_to_a_branch_leaves_main_alone(local_hub, hub_repo_id, model_folder):
    result = push_model(model_folder, hub_repo_id, revision="candidate")
    assert result.url == f"{local_hub.url}/{hub_repo_id}/tree/candidate"
    assert local_hub.list_files(hub_repo_id, "candidate") == MODEL_FILES
    assert local_hub.list_files(hub_repo_id, "main") == [".gitattributes"]


def test_push_without_token_fails_with_one_line(hub_repo_id, model_folder, no_token, capsys):
    code, err = cli_error(capsys, "push", model_folder, "--repo-id", hub_repo_id)
    assert code == 2
    assert err == "hub: error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)\n"
    assert not (model_folder / "README.md").exists(), "nothing written before the token check"


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "user/with space", "user/modèle", "user/double--dash",
                                     "user/", "-user/model", "user/model.", "user/" + "x" * 97])
def test_push_rejects_malformed_repo_ids(repo_id, model_folder, capsys):
    code, err = cli_error(capsys, "push", model_folder, f"--repo-id={repo_id}")
    assert code == 2
    assert err.startswith(f"hub: error: malformed repo id {repo_id!r}: expected 'username/model-name'")
    assert err.count("\n") == 1


def test_push_refuses_pickles_and_non_model_folders(hub_repo_id, model_folder, tmp_path, capsys):
    (model_folder / "pytorch_model.bin").write_bytes(b"pickle")
    code, err = cli_error(capsys, "push", model_folder, "--repo-id", hub_repo_id)
    assert (code, err) == (2, f"hub: error: {model_folder} contains pickled weights (pytorch_model.bin): only "
                              "safetensors are pushed; delete them or move them out of the folder\n")
    code, err = cli_error(capsys, "push", tmp_path / "nowhere", "--repo-id", hub_repo_id)
    assert code == 2 and "is not a folder" in err
    (model_folder / "pytorch_model.bin").unlink()
    (model_folder / "model.safetensors").unlink()
    code, err = cli_error(capsys, "push", model_folder, "--repo-id", hub_repo_id)
    assert (code, err) == (2, f"hub: error: {model_folder} is not a model folder: missing model.safetensors "
                              "(save the model with safetensors weights first)\n")


def test_push_with_the_hub_down_fails_with_one_line(local_hub, hub_repo_id, model_folder, capsys):
    with local_hub.down():
        code, err = cli_error(capsys, "push", model_folder, "--repo-id", hub_repo_id)
    assert code == 1
    assert err == (f"hub: error: cannot reach the Hub at {local_hub.url} (ConnectError); check the network or "
                   "HF_ENDPOINT and retry\n")


def test_push_with_a_rejected_token_says_so(local_hub, hub_repo_id, model_folder, capsys):
    local_hub.tokens = {"hf_some_other_token"}
    try:
        code, err = cli_error(capsys, "push", model_folder, "--repo-id", hub_repo_id)
    finally:
        local_hub.tokens = None
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("hub: error: the Hub refused: ") and "write access" in err


# ---- pull --------------------------------------------------------------------------------------------------
def _entry(repo_id, local=None, revision=None):
    return ModelEntry(name="xception", repo_id=repo_id, revision=revision, local=local)


def test_resolve_falls_back_hub_cache_embedded_error(local_hub, hub_repo_id, model_folder, hf_cache, tmp_path,
                                                     caplog):
    push_model(model_folder, hub_repo_id)
    embedded = tmp_path / "embedded"
    entry = _entry(hub_repo_id, local=str(embedded))
    caplog.set_level(logging.INFO, logger="deepfake_detector.registry")

    from_hub = resolve_model(entry)
    assert from_hub.source == "hub"
    assert sorted(os.listdir(from_hub.path)) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    assert (from_hub.path / "model.safetensors").read_bytes() == (model_folder / "model.safetensors").read_bytes()

    with local_hub.down():
        caplog.clear()
        from_cache = resolve_model(entry)
        assert (from_cache.source, from_cache.path) == ("cache", from_hub.path)
        assert "from the cache" in caplog.text and "ConnectError" in caplog.text

        empty_cache = tmp_path / "empty-cache"
        with pytest.raises(ModelUnavailableError) as error:
            resolve_model(entry, cache_dir=empty_cache)
        assert f"embedded folder {embedded} (no config.json there)" in str(error.value)
        assert f"Hub {hub_repo_id}@main (ConnectError" in str(error.value)

        embedded.mkdir()
        (embedded / "config.json").write_text("{}")
        from_embedded = resolve_model(entry, cache_dir=empty_cache)
        assert (from_embedded.source, from_embedded.path) == ("embedded", embedded)


def test_resolve_unknown_repo_or_revision_falls_back(hub_repo_id, model_folder, hf_cache, tmp_path, caplog):
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    (embedded / "config.json").write_text("{}")
    resolved = resolve_model(_entry("local-user/never-pushed", local=str(embedded)))
    assert resolved.source == "embedded"
    assert "RepositoryNotFoundError" in caplog.text

    push_model(model_folder, hub_repo_id)
    resolve_model(_entry(hub_repo_id))  # caches main
    assert resolve_model(_entry(hub_repo_id, local=str(embedded), revision="gone")).source == "embedded"
    assert "RevisionNotFoundError" in caplog.text


def test_resolve_pinned_revision(local_hub, hub_repo_id, model_folder, hf_cache):
    first = push_model(model_folder, hub_repo_id)
    (model_folder / "metrics.json").write_text("{}")
    push_model(model_folder, hub_repo_id)
    pinned = resolve_model(_entry(hub_repo_id, revision=first.commit_sha))
    assert pinned.path.name == first.commit_sha
    assert json.loads((pinned.path / "metrics.json").read_text()) == METRICS


def test_offline_subprocess_loads_from_the_cache(local_hub, hub_repo_id, model_folder, hf_cache):
    push_model(model_folder, hub_repo_id)
    online = resolve_model(_entry(hub_repo_id))
    local_hub.requests.clear()
    script = ("from deepfake_detector.registry import ModelEntry, resolve_model; "
              f"r = resolve_model(ModelEntry(name='x', repo_id='{hub_repo_id}')); print(r.source, r.path)")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cache", str(online.path)]
    assert local_hub.requests == [], "offline mode must not send a single request"


def test_load_models_skips_what_resolves_nowhere(hub_repo_id, model_folder, hf_cache, tmp_path, caplog, capsys):
    push_model(model_folder, hub_repo_id)
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": [
        {"name": "xception", "repo_id": hub_repo_id, "revision": None, "local": None},
        {"name": "ghost", "repo_id": "local-user/ghost", "revision": None, "local": "models/ghost"}]}))
    models = load_models(config, root=tmp_path)
    assert list(models) == ["xception"] and models["xception"].source == "hub"
    assert "skipping model 'ghost' not found: tried Hub local-user/ghost@main (RepositoryNotFoundError" in caplog.text

    assert main(["pull", "--config", str(config)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"xception: hub {models['xception'].path}"
    assert out[1].startswith("ghost: missing (model 'ghost' not found: tried Hub local-user/ghost@main")


def test_shipped_models_json_is_valid():
    config = json.loads((PROJECT_ROOT / "models" / "models.json").read_text())
    entries = [ModelEntry.from_dict(entry) for entry in config["models"]]
    assert [e.name for e in entries] == [
        "tuned-cnn", "efficientnet-lite2", "dinov2-vits14-probe", "xception", "ensemble"]
    assert all((PROJECT_ROOT / e.local / "config.json").is_file() for e in entries)


def test_a_models_json_key_nothing_reads_is_refused():
    # trust_remote_code is decided by each folder's config.json (an ensemble's auto_map), not by the list.
    with pytest.raises(ValueError) as error:
        ModelEntry.from_dict({"name": "ensemble", "trust_remote_code": True})
    assert str(error.value).endswith("may hold only name, repo_id, revision, local (remove ['trust_remote_code'])")


# ---- the Space ---------------------------------------------------------------------------------------------
def _fake_project(root: Path) -> None:
    files = ["app.py", "README.md", "requirements.txt", "stray.py", "conftest.py", "pyproject.toml", "notes.md",
             "train/__init__.py", "train/data.py", "train/__pycache__/data.cpython-311.pyc",
             "hub/__init__.py", "hub/push.py", "deepfake_detector/__init__.py", "deepfake_detector/faces.py",
             "deepfake_detector/__pycache__/faces.cpython-311.pyc", "models/models.json",
             "models/xception/config.json", "models/xception/model.safetensors",
             "models/xception/checkpoints/last.pt", "models/xception/model.safetensors.partial",
             "models/ensemble.partial/config.json",
             "tests/test_app.py", "runs/xception/metrics.json", "bench/speed.py", "bench/lime_timing.json",
             "examples/real-studio.jpg", "examples/examples.json", ".ci/run.sh", ".git/HEAD",
             ".github/workflows/ci.yml"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\n")
    (root / "README.md").write_text("# Deepfake detector\n\nHuman README.\n")
    (root / "models/models.json").write_text(json.dumps({"models": [
        {"name": "xception", "repo_id": "someone/deepfake-xception", "local": "models/xception"}]}))


def test_space_files_is_exactly_what_the_space_needs(tmp_path):
    _fake_project(tmp_path)
    assert space_files(tmp_path) == [
        "README.md", "app.py", "bench/lime_timing.json", "deepfake_detector/__init__.py", "deepfake_detector/faces.py",
        "examples/examples.json", "examples/real-studio.jpg", "models/models.json", "models/xception/config.json",
        "models/xception/model.safetensors", "requirements.txt"]


def test_push_space_uploads_space_files_with_a_fresh_header(local_hub, hub_repo_id, tmp_path, capsys):
    _fake_project(tmp_path)
    assert main(["push-space", "--space-id", hub_repo_id, "--root", str(tmp_path)]) == 0
    assert local_hub.list_files(hub_repo_id, repo_type="space") == sorted([".gitattributes", *space_files(tmp_path)])
    readme = local_hub.files(hub_repo_id, repo_type="space")["README.md"].decode()
    header = SpaceCard(readme).data.to_dict()
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert header["models"] == ["someone/deepfake-xception"]
    assert readme.endswith("# Deepfake detector\n\nHuman README.\n")
    assert (tmp_path / "README.md").read_text() == "# Deepfake detector\n\nHuman README.\n"
    assert f"{local_hub.url}/spaces/{hub_repo_id}" in capsys.readouterr().out


def test_space_front_matter_and_update_keep_the_body():
    header = space_front_matter(models=["someone/deepfake-xception"])
    assert header["sdk_version"] == version("gradio")
    assert len(header["short_description"]) <= 60
    with pytest.raises(ValueError, match="60 characters"):
        space_front_matter(models=[], short_description="x" * 61)

    body = "# Title\n\n---\n\nText after a rule.\n"
    updated = update_front_matter(body, header)
    assert split_front_matter(updated) == (header, body)
    edited = update_front_matter("---\ntitle: Old\nhf_oauth: true\n---\n" + body, header)
    meta, rest = split_front_matter(edited)
    assert rest == body
    assert meta["title"] == header["title"] and meta["hf_oauth"] is True
    assert SpaceCard(edited).data.to_dict()["sdk"] == "gradio"


def test_refresh_space_header_keeps_what_people_chose():
    readme = ("---\ntitle: My Detector\nemoji: 🔍\nsdk: gradio\nsdk_version: 1.0.0\nshort_description: Mine\n"
              "models:\n- old/model\n---\n\n# Body\n")
    meta, body = split_front_matter(refresh_space_header(readme, models=["new/model"]))
    assert body == "\n# Body\n"
    assert (meta["title"], meta["emoji"], meta["short_description"]) == ("My Detector", "🔍", "Mine")
    assert (meta["sdk_version"], meta["models"]) == (version("gradio"), ["new/model"])
    assert list(meta)[:3] == ["title", "emoji", "sdk"], "existing keys keep their order"
    with pytest.raises(ValueError, match="60 characters"):
        refresh_space_header("---\nshort_description: " + "x" * 61 + "\n---\n", models=[])


def test_space_readme_command_rewrites_only_the_header(tmp_path, capsys):
    _fake_project(tmp_path)
    assert main(["space-readme", "--root", str(tmp_path)]) == 0
    header, body = split_front_matter((tmp_path / "README.md").read_text())
    assert header == space_front_matter(models=["someone/deepfake-xception"])
    assert body == "# Deepfake detector\n\nHuman README.\n"


def test_hub_roundtrip_fixture_gives_back_the_pushed_folder(hub_roundtrip, local_hub, model_folder):
    path, repo_id = hub_roundtrip(model_folder)
    assert sorted(os.listdir(path)) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    for name in os.listdir(path):
        assert Path(path, name).read_bytes() == local_hub.files(repo_id)[name]
