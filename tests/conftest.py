"""Hermetic test settings: no network, Hub cache in a temp dir, telemetry off, deterministic seeds."""

import atexit
import os
import shutil
import tempfile

# Set before huggingface_hub is imported anywhere.
_HF_HOME = tempfile.mkdtemp(prefix="clipdfer-test-hf-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_ENDPOINT", None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A loopback Hub (see hub_server.py) with HF_ENDPOINT pointing at it, online, and a fresh cache."""
    from huggingface_hub import constants, file_download  # file_download imported before the cache is patched

    from hub_server import FakeHub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    if hasattr(file_download, "HF_HUB_CACHE"):  # huggingface_hub < 0.25 reads its own copy, bound at import
        monkeypatch.setattr(file_download, "HF_HUB_CACHE", constants.HF_HUB_CACHE)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


@pytest.fixture
def hub_uploads(monkeypatch):
    """``huggingface_hub.HfApi`` replaced by a recorder: the dict it returns gets ``endpoint``, ``created``
    (repo id, private, exist_ok) and ``files`` (name -> bytes of the uploaded folder); uploads return
    ``"commit to <repo id>"``."""
    import huggingface_hub
    uploaded = {}

    class RecordingApi:
        def __init__(self, endpoint=None, token=None):
            uploaded["endpoint"] = endpoint

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["created"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message, revision=None, create_pr=False):
            uploaded["files"] = {f: open(os.path.join(folder_path, f), "rb").read() for f in os.listdir(folder_path)}
            return f"commit to {repo_id}"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return uploaded
