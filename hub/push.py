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
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token

from deepfake_detector.card import model_card
from hub.space import refresh_space_header

REQUIRED_MODEL_FILES = ("config.json", "model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Never uploaded from a model folder or the project: training state, partial writes, caches, VCS.
SKIPPED_DIRS = {"checkpoints", "__pycache__", ".git", ".ipynb_checkpoints", ".cache"}
SKIPPED_SUFFIXES = (".partial", ".pyc", ".tmp")
SKIPPED_NAMES = {".DS_Store"}

# The Space: the app, the core it stands on and the shipped models; never train/ or hub/ (the app imports
# neither: tests/test_layers.py checks it) and no other top-level module.
SPACE_TOP_FILES = ("app.py", "README.md", "requirements.txt", "packages.txt")
SPACE_FOLDERS = ("deepfake_detector", "models")

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class PushError(ValueError):
    """A mistake the user can fix; the message says how."""


@dataclass(frozen=True)
class PushResult:
    url: str
    commit_sha: str
    files: list[str]
    card_written: bool = False  # a model card was generated from metrics.json by this push


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid "namespace/name" Hub id, else PushError."""
    name = repo_id.split("/")[-1]
    if (not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or name.endswith((".", "-"))
            or len(name) > 96):
        raise PushError(f"malformed repo id {repo_id!r}: expected 'username/model-name' (letters, digits, "
                        "'-', '_', '.'; no '--' or '..'; name at most 96 characters)")
    return repo_id


def require_token(token: str | None = None) -> str:
    """The token to write with: given, or HF_TOKEN, or the one `hf auth login` saved."""
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def _is_skipped(relative: Path) -> bool:
    folders = relative.parts[:-1]
    return (any(part in SKIPPED_DIRS or part.endswith(".partial") for part in folders)
            or relative.name in SKIPPED_NAMES or relative.name.endswith(SKIPPED_SUFFIXES))


def _walk(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not _is_skipped(p.relative_to(folder)))


def model_files(folder: str | Path) -> list[str]:
    """The files of a model folder that go to the Hub (relative posix paths), after checking the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: pass the output folder of a training run")
    missing = [name for name in REQUIRED_MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise PushError(f"{folder} is not a model folder: missing {', '.join(missing)} "
                        "(save the model with safetensors weights first)")
    files = _walk(folder)
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


def _commit_files(api: HfApi, repo_id: str, root: Path, files: list[str], *, repo_type: str,
                  revision: str | None, message: str, overrides: dict[str, bytes] | None = None):
    """One commit adding `files` (paths under root); `overrides` gives some of them other content."""
    overrides = overrides or {}
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=overrides.get(f, root / f)) for f in files]
    return api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=operations,
                             commit_message=message, revision=revision)


def _repo_url(api: HfApi, repo_id: str, repo_type: str, revision: str | None) -> str:
    prefix = {"model": "", "space": "spaces/", "dataset": "datasets/"}[repo_type]
    url = f"{api.endpoint}/{prefix}{repo_id}"
    return f"{url}/tree/{revision}" if revision and revision != "main" else url


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
    commit = _commit_files(api, repo_id, folder, files, repo_type="model", revision=revision,
                           message=commit_message or f"Upload {folder.name} model")
    return PushResult(_repo_url(api, repo_id, "model", revision), commit.oid, files, card_written)


def space_files(root: str | Path) -> list[str]:
    """Exactly the project files the Space needs (relative posix paths), see the module docstring."""
    root = Path(root)
    files = [name for name in SPACE_TOP_FILES if (root / name).is_file()]
    for folder in SPACE_FOLDERS:
        if (root / folder).is_dir():
            files += [f"{folder}/{f}" for f in _walk(root / folder)]
    return sorted(files)


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
    readme = space_readme(root).encode()
    token = require_token(token)
    api = HfApi(token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = _commit_files(api, space_id, root, files, repo_type="space", revision=None,
                           message=commit_message or "Update the Space", overrides={"README.md": readme})
    return PushResult(_repo_url(api, space_id, "space", None), commit.oid, files)
