"""Find the app's models: from the Hub, else the local Hugging Face cache, else the folders shipped in the repo.

    python -m hub pull [--config models/models.json]     # prints what resolved where

models/models.json lists the models (name, Hub repo id, optional revision, embedded `local` folder relative to
the project root). For each one, `resolve_model` tries in order:

1. the Hub (`snapshot_download`, weights as safetensors only), unless offline (HF_HUB_OFFLINE=1);
2. the cache: a snapshot downloaded earlier (`local_files_only=True`);
3. the embedded folder (`models/...`), the default models shipped with the Space.

It logs one line saying which one it used and why. The app then loads each `resolved.path` with
`inference.load_pipeline`, which decides `trust_remote_code` from the folder itself (its `auto_map`: the ensemble's modelling file, every folder's face processor).
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.constants import HF_HUB_OFFLINE
from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "models" / "models.json"
# Everything a model folder needs; never pickles, checkpoints or anything else a repo may hold.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.py", "*.png"]
# What "the Hub is unreachable / does not have it" looks like: HfHubHTTPError (RepositoryNotFoundError,
# RevisionNotFoundError, 401, 5xx…), OfflineModeIsEnabled and LocalEntryNotFoundError are all OSErrors.
HUB_ERRORS = (OSError, httpx2.HTTPError)


class ModelUnavailableError(RuntimeError):
    """A model resolved nowhere; the message lists what was tried."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str | None = None
    revision: str | None = None
    local: str | None = None  # embedded folder, relative to the project root

    @classmethod
    def from_dict(cls, entry: dict) -> "ModelEntry":
        unknown = set(entry) - set(cls.__dataclass_fields__)
        if unknown or "name" not in entry:
            fields = ", ".join(cls.__dataclass_fields__)
            raise ValueError(f"bad model entry {entry!r}: it needs 'name' and may hold only {fields} "
                             f"(remove {sorted(unknown)})")
        return cls(**entry)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "hub", "cache" or "embedded"


def read_config(config_path: str | Path = DEFAULT_CONFIG) -> list[ModelEntry]:
    return [ModelEntry.from_dict(entry) for entry in json.loads(Path(config_path).read_text())["models"]]


def is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    return HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _reason(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _from_hub(entry: ModelEntry, cache_dir) -> Path:
    # Ask the Hub first: snapshot_download alone would quietly fall back to the cache when the Hub is down,
    # and the log would claim "hub". A branch name (not the commit sha) goes to snapshot_download so the
    # cache records refs/<branch>, which the offline path needs later.
    HfApi().repo_info(entry.repo_id, revision=entry.revision)
    return Path(snapshot_download(entry.repo_id, revision=entry.revision, allow_patterns=ALLOW_PATTERNS,
                                  cache_dir=cache_dir))


def _from_cache(entry: ModelEntry, cache_dir) -> Path:
    return Path(snapshot_download(entry.repo_id, revision=entry.revision, allow_patterns=ALLOW_PATTERNS,
                                  cache_dir=cache_dir, local_files_only=True))


def _embedded(entry: ModelEntry, root: Path) -> Path | None:
    if not entry.local:
        return None
    folder = Path(entry.local) if Path(entry.local).is_absolute() else root / entry.local
    return folder if (folder / "config.json").is_file() else None


def resolve_model(entry: ModelEntry | dict, *, offline: bool | None = None, cache_dir: str | Path | None = None,
                  root: str | Path = PROJECT_ROOT) -> ResolvedModel:
    """Where to load one model from: the Hub, the cache or the embedded folder (see module docstring)."""
    entry = entry if isinstance(entry, ModelEntry) else ModelEntry.from_dict(entry)
    offline = is_offline() if offline is None else offline
    where = f"{entry.repo_id}@{entry.revision or 'main'}"
    tried = []
    if entry.repo_id and not offline:
        try:
            path = _from_hub(entry, cache_dir)
            logger.info("model %s: from the Hub (%s, commit %s)", entry.name, where, path.name[:7])
            return ResolvedModel(entry.name, path, "hub")
        except HUB_ERRORS as error:
            tried.append(f"Hub {where} ({_reason(error)})")
    elif entry.repo_id:
        tried.append(f"Hub {where} (offline: HF_HUB_OFFLINE=1)")
    if entry.repo_id:
        try:
            path = _from_cache(entry, cache_dir)
            logger.warning("model %s: from the cache (snapshot %s) because: %s", entry.name, path.name[:7], tried[-1])
            return ResolvedModel(entry.name, path, "cache")
        except (LocalEntryNotFoundError, IncompleteSnapshotError) as error:
            incomplete = isinstance(error, IncompleteSnapshotError)
            tried.append("cache (incomplete snapshot)" if incomplete else "cache (not downloaded before)")
        except HUB_ERRORS as error:
            tried.append(f"cache ({_reason(error)})")
    if folder := _embedded(entry, Path(root)):
        because = "; ".join(tried) or "no Hub repo configured"
        # Offline by choice (HF_HUB_OFFLINE) or no repo: the embedded copy is the plan, not a problem.
        level = logging.INFO if offline or not entry.repo_id else logging.WARNING
        logger.log(level, "model %s: from the embedded folder %s because: %s", entry.name, entry.local, because)
        return ResolvedModel(entry.name, folder, "embedded")
    tried.append(f"embedded folder {entry.local} (no config.json there)" if entry.local else "no embedded folder")
    raise ModelUnavailableError(f"model {entry.name!r} not found: tried " + "; ".join(tried))


def load_models(config_path: str | Path = DEFAULT_CONFIG, *, offline: bool | None = None,
                cache_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT) -> dict[str, ResolvedModel]:
    """Resolve every model of the config; those found nowhere are skipped with a warning."""
    resolved = {}
    for entry in read_config(config_path):
        try:
            resolved[entry.name] = resolve_model(entry, offline=offline, cache_dir=cache_dir, root=root)
        except ModelUnavailableError as error:
            logger.warning("skipping %s", error)
    return resolved


def shipped_models(config_path: str | Path = DEFAULT_CONFIG) -> tuple[dict[str, ResolvedModel], dict[str, str]]:
    """({name: ResolvedModel}, {name: Hub id}) for the models of the config: Hub, else cache, else models/."""
    return load_models(config_path), {entry.name: entry.repo_id for entry in read_config(config_path) if entry.repo_id}


def none_resolved_message(config_path: str | Path = DEFAULT_CONFIG) -> str:
    """What the app says when it starts and no model of the config resolved anywhere."""
    names = ", ".join(entry.name for entry in read_config(config_path))
    return (f"No model found: models/models.json lists {names}, but none resolved from the Hub, the local cache "
            "or models/. Connect to the Hub, copy trained model folders into models/, or pass "
            "--model NAME=FOLDER (e.g. --model xception=runs/xception).")
