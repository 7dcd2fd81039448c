"""Fetching weight files from the Hugging Face Hub (through huggingface_hub, with its cache and offline mode)."""

import logging
from typing import Optional

from ._pretrained import PretrainedCfg

__all__ = ["PretrainedWeightsError", "download_weights"]

_logger = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Weights were asked for and cannot be had; the message says why and what to do. Never a silent fallback."""


def download_weights(cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> str:
    """Local path of the cfg's weight file, downloaded into the Hub cache if needed.

    Honours ``HF_HOME`` / ``HF_HUB_CACHE`` (or ``cache_dir``), ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    repo, filename, revision = cfg.hf_hub_id, cfg.hf_hub_filename, cfg.hf_hub_revision or "main"
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    where = f"{repo}/{filename} at revision {revision!r} (for {name})"
    cache = cache_dir or constants.HF_HUB_CACHE
    try:
        return hf_hub_download(repo, filename, revision=cfg.hf_hub_revision, cache_dir=cache_dir)
    except LocalEntryNotFoundError as e:
        offline = " HF_HUB_OFFLINE is set;" if constants.HF_HUB_OFFLINE else ""
        raise PretrainedWeightsError(
            f"cannot get {where}: not in the cache {cache} and the Hub cannot be reached ({constants.ENDPOINT});"
            f"{offline} download it once while online, or pass checkpoint_path= a local .safetensors file") from e
    except EntryNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where} does not exist on the Hub ({constants.ENDPOINT}): check the file name, or override it with "
            f"pretrained_cfg_overlay=dict(hf_hub_filename=...)") from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise PretrainedWeightsError(
            f"{where}: repository or revision not found on {constants.ENDPOINT} ({type(e).__name__}); check the id and "
            f"revision, or log in with `hf auth login` if the repository is private") from e
    except (HfHubHTTPError, OSError) as e:
        raise PretrainedWeightsError(
            f"download of {where} from {constants.ENDPOINT} failed ({e}); retry, or pass checkpoint_path=") from e
