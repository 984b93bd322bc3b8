"""Shared test setup. Run the tests with `python -m pytest tests/...` from the project root.

No test may reach the real Hugging Face Hub: at import time, before anything imports huggingface_hub or
transformers (both read their settings once, at import), this file starts ONE local Hub (tests/hub_server.py)
for the whole session and points HF_ENDPOINT at it, HF_HOME at a fresh temporary folder and HF_TOKEN at a
fake token. An autouse fixture checks that every test still runs against it.
"""

import os
import sys
import tempfile
import uuid

import pytest

# No test reads ../shared: training's hidden-evaluation guard ('auto') runs only where a test passes --guard with
# a stand-in script (tests/helpers.py GUARD_SCRIPT). Set in the environment, so subprocesses see it too.
os.environ["DEEPFAKE_GUARD"] = "none"

# ===================================== local Hub (owner: hub) =====================================
if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point it at the local test Hub: "
        "do not import huggingface_hub / transformers / timm / train / hub from a root conftest.py or a plugin"
    )

from hub_server import LocalHub  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative conftest import)

FAKE_TOKEN = "hf_localTestTokenDoNotUse0123456789"
HF_HOME = tempfile.mkdtemp(prefix="hf-home-")
LOCAL_HUB = LocalHub().start()

# Settings that would send a test elsewhere than LOCAL_HUB / HF_HOME, or make it offline.
for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGING_FACE_HUB_TOKEN",
             "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE",
             "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING", "HF_OIDC_RESOURCE"):
    os.environ.pop(name, None)
os.environ.update({
    "HF_ENDPOINT": LOCAL_HUB.url,
    "HF_HOME": HF_HOME,
    "HF_TOKEN": FAKE_TOKEN,
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",  # the local Hub answers "regular" uploads only, never Xet
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
})


def pytest_unconfigure(config):
    LOCAL_HUB.stop()


@pytest.fixture(autouse=True)
def _only_the_local_hub(monkeypatch):
    """Every test runs against LOCAL_HUB with the fake token, even if an earlier test changed the env."""
    monkeypatch.setenv("HF_ENDPOINT", LOCAL_HUB.url)
    monkeypatch.setenv("HF_HOME", HF_HOME)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    for name in ("HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        assert constants.ENDPOINT == LOCAL_HUB.url, f"huggingface_hub talks to {constants.ENDPOINT}"
        assert constants.HF_TOKEN_PATH.startswith(HF_HOME), "a real login token file could be read"
        assert not constants.HF_HUB_OFFLINE


@pytest.fixture
def local_hub():
    """The session's LocalHub (tests/hub_server.py): `.url`, `.list_files(repo_id)`, `.requests`, …"""
    return LOCAL_HUB


@pytest.fixture
def hub_token():
    """The fake token every test sends (HF_TOKEN)."""
    return FAKE_TOKEN


@pytest.fixture
def hub_repo_id(request):
    """A fresh repo id on the local Hub, unique per test."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return f"local-user/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test (also for subprocesses, through HF_HUB_CACHE)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_token(monkeypatch):
    """No token anywhere: HF_TOKEN unset and no login file."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert not os.path.exists(huggingface_hub.constants.HF_TOKEN_PATH)


@pytest.fixture
def hub_roundtrip(local_hub, tmp_path_factory):
    """push(folder) -> local snapshot: upload a model folder with `python -m hub push`'s code to the local Hub,
    then download it into a fresh cache, as a user of the model would. Returns (snapshot path, repo id)."""
    from huggingface_hub import snapshot_download

    from deepfake_detector.registry import ALLOW_PATTERNS
    from hub.push import push_model

    def roundtrip(folder, repo_id=None):
        repo_id = repo_id or f"local-user/roundtrip-{uuid.uuid4().hex[:8]}"
        result = push_model(folder, repo_id)
        cache = tmp_path_factory.mktemp("roundtrip-cache")
        path = snapshot_download(repo_id, revision=result.commit_sha, cache_dir=cache, allow_patterns=ALLOW_PATTERNS)
        return path, repo_id

    return roundtrip
# =================================== end of local Hub block ===================================
