"""Hermetic test settings: no network, Hub cache in a temp dir, telemetry off, deterministic seeds."""

import os
import tempfile

# Set before huggingface_hub is imported anywhere.
_HF_HOME = tempfile.mkdtemp(prefix="clipdfer-test-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_ENDPOINT", None)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
