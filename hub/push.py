"""Push a trained model folder, or the Space, to the Hugging Face Hub in one commit.

    python -m hub push runs/xception --repo-id user/deepfake-xception [--private] [--revision BRANCH]
    python -m hub push-space --space-id user/deepfake-detector

A model folder is what training saves (config.json + model.safetensors + metrics.json + plots); its card
(README.md) is written from metrics.json when the folder has none, never over an existing one unless asked.
Only safetensors weights go up: a folder with pickled weights (*.bin, *.pt, …) is refused. The Space gets
exactly `space_files(root)`, with the README's YAML header refreshed from models/models.json on the way.

User errors raise `PushError` (the CLI prints one line and exits 2); Hub errors propagate.
"""

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from deepfake_detector.card import model_card
from hub.space import refresh_space_header

REQUIRED_MODEL_FILES = ("config.json", "model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Never uploaded from a model folder or the project (upload_folder's ignore_patterns; "*" matches "/" too):
# training state, partial writes, caches, VCS.
IGNORE_PATTERNS = ["checkpoints/*", "*/checkpoints/*", "__pycache__/*", "*/__pycache__/*", ".ipynb_checkpoints/*",
                   "*/.ipynb_checkpoints/*", ".cache/*", "*/.cache/*", ".git/*", "*.partial", "*.partial/*",
                   "*.pyc", "*.tmp", ".DS_Store", "*/.DS_Store"]
# The Space (upload_folder's allow_patterns): the app, the core it stands on and the shipped models; never train/
# or hub/ (the app imports neither: tests/test_layers.py checks it) and no other top-level module.
# What the Space runs on: the app, the core, the models, the examples it shows and the LIME time its help quotes.
SPACE_PATTERNS = ["app.py", "README.md", "requirements.txt", "packages.txt", "deepfake_detector/*", "models/*",
                  "examples/*", "bench/lime_timing.json"]
ASCII_REPO_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class PushError(ValueError):
    """A mistake the user can fix; the message says how."""


@dataclass(frozen=True)
class PushResult:
    url: str
    commit_sha: str
    files: list[str]
    card_written: bool = False  # a model card was generated from metrics.json by this push


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if huggingface_hub's validate_repo_id accepts it and it is an ASCII "namespace/name"."""
    try:
        validate_repo_id(repo_id)
        problem = None if ASCII_REPO_ID.fullmatch(repo_id) else "a namespace and ASCII letters only"
    except HFValidationError as error:
        problem = str(error).splitlines()[0]
    if problem:
        raise PushError(f"malformed repo id {repo_id!r}: expected 'username/model-name' (letters, digits, '-', "
                        f"'_', '.'; no '--' or '..'; name at most 96 characters): {problem}")
    return repo_id


def require_token(token: str | None = None) -> str:
    """The token to write with: given, or HF_TOKEN, or the one `hf auth login` saved."""
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def _files(root: Path, allow_patterns=None) -> list[str]:
    """The files under `root` that upload_folder would send with these patterns (relative posix paths)."""
    candidates = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(filter_repo_objects(candidates, allow_patterns=allow_patterns, ignore_patterns=IGNORE_PATTERNS))


def model_files(folder: str | Path) -> list[str]:
    """The files of a model folder that go to the Hub (relative posix paths), after checking the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: pass the output folder of a training run")
    missing = [name for name in REQUIRED_MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise PushError(f"{folder} is not a model folder: missing {', '.join(missing)} "
                        "(save the model with safetensors weights first)")
    files = _files(folder)
    if pickles := [f for f in files if f.endswith(PICKLE_SUFFIXES)]:
        raise PushError(f"{folder} contains pickled weights ({', '.join(pickles)}): only safetensors are pushed; "
                        "delete them or move them out of the folder")
    return files


def ensure_card(folder: str | Path, repo_id: str, *, overwrite: bool = False) -> bool:
    """Write README.md from metrics.json if the folder has none (or if `overwrite`); True if written."""
    folder = Path(folder)
    card = folder / "README.md"
    if card.exists() and not overwrite:
        return False
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise PushError(f"{folder} has no README.md and no metrics.json to write one from: add a model card")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as error:
        raise PushError(f"{metrics_path} is not valid JSON ({error})") from None
    card.write_text(model_card(metrics, repo_id=repo_id))
    return True


def _url(commit, revision: str | None) -> str:
    """The repo's page (at `revision` when not main), from the CommitInfo the upload returned."""
    return f"{commit.repo_url}/tree/{revision}" if revision and revision != "main" else str(commit.repo_url)


def push_model(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
               revision: str | None = None, commit_message: str | None = None,
               overwrite_card: bool = False) -> PushResult:
    """Create the model repo if needed and upload the folder (minus checkpoints/) in one commit."""
    folder = Path(folder)
    repo_id = check_repo_id(repo_id)
    model_files(folder)  # check before writing a card into it
    token = require_token(token)
    card_written = ensure_card(folder, repo_id, overwrite=overwrite_card)
    files = model_files(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=IGNORE_PATTERNS, revision=revision,
                               commit_message=commit_message or f"Upload {folder.name} model")
    return PushResult(_url(commit, revision), commit.oid, files, card_written)


def space_files(root: str | Path) -> list[str]:
    """Exactly the project files the Space gets (relative posix paths): SPACE_PATTERNS minus IGNORE_PATTERNS."""
    root = Path(root)
    tops = [root / name.split("/")[0] for name in SPACE_PATTERNS]  # walk only what may match, not runs/ or .git/
    files = [p.relative_to(root).as_posix() for top in tops if top.exists()
             for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()]
    return sorted(filter_repo_objects(files, allow_patterns=SPACE_PATTERNS, ignore_patterns=IGNORE_PATTERNS))


def space_readme(root: str | Path) -> str:
    """The project README.md with its Space header refreshed: sdk version, models from models/models.json, …"""
    root = Path(root)
    readme = root / "README.md"
    config = root / "models" / "models.json"
    if not readme.is_file():
        raise PushError(f"{readme} is missing: the Space reads its configuration from README.md")
    models = [entry["repo_id"] for entry in json.loads(config.read_text())["models"] if entry.get("repo_id")] \
        if config.is_file() else []
    return refresh_space_header(readme.read_text(), models=models)


def push_space(root: str | Path, space_id: str, *, token: str | None = None, private: bool = False,
               commit_message: str | None = None) -> PushResult:
    """Create the Gradio Space if needed and upload `space_files(root)` in one commit."""
    root = Path(root)
    space_id = check_repo_id(space_id)
    files = space_files(root)
    if missing := [name for name in ("app.py", "README.md", "requirements.txt") if name not in files]:
        raise PushError(f"{root.resolve()} is not the project root: missing {', '.join(missing)}")
    readme = space_readme(root)
    token = require_token(token)
    api = HfApi(token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="space-") as staging:  # the Space's files, its README refreshed
        for name in files:
            (Path(staging) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, Path(staging) / name)
        (Path(staging) / "README.md").write_text(readme)
        commit = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=staging,
                                   allow_patterns=SPACE_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
                                   commit_message=commit_message or "Update the Space")
    return PushResult(_url(commit, None), commit.oid, files)
