"""Fetching raw weight files: from the Hugging Face Hub (``hf_hub_download`` and its cache) and from release URLs
(gdown), each checked before it is read; nothing else (docs/weights.md).
"""

import inspect
import logging
import os
import re
import urllib.parse
from typing import Optional, Tuple

from .._files import file_kind, html_title, sha256_file
from ..version import __version__

__all__ = ["PretrainedWeightsError", "hub_download", "fetch_url", "check_sha256", "is_offline", "hub_endpoint",
           "is_google_drive_url", "GDOWN_EXTRA"]

_logger = logging.getLogger(__name__)

GDOWN_EXTRA = "clipdfer[download]"
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_TRUE = {"1", "ON", "YES", "TRUE"}


class PretrainedWeightsError(RuntimeError):
    """Weights were asked for and cannot be had; the message says why and what to do. Never a silent fallback."""


def hub_endpoint() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """``HF_HUB_OFFLINE``, read now (setting it after import works)."""
    from huggingface_hub import constants
    is_offline_mode = getattr(constants, "is_offline_mode", None)  # huggingface_hub >= 1.2.1; a constant before
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or bool(
        is_offline_mode() if is_offline_mode is not None else constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                 what: str = "") -> str:
    """Local path of ``filename`` from Hub repo ``repo_id``, downloaded into the cache when needed.

    Raises:
        PretrainedWeightsError: with the repo, file, revision, URL and cache path, and what to do.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    rev = revision or "main"
    url = f"{endpoint}/{repo_id}/resolve/{rev}/{filename}"
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"{repo_id}/{filename} at revision {rev!r}{f' ({what})' if what else ''}"
    offline = is_offline()
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                               local_files_only=offline, library_name="clipdfer", library_version=__version__)
    except LocalEntryNotFoundError as e:
        reason = ("offline mode is on (HF_HUB_OFFLINE)" if offline else f"{endpoint} cannot be reached")
        raise PretrainedWeightsError(
            f"cannot get {where}: it is not in the cache {cache} and {reason}. Download it once while online "
            f"({url}), point HF_HOME / cache_dir at a cache that has it, or pass checkpoint_path= a local "
            f".safetensors file") from e
    except RevisionNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: revision {rev!r} does not exist ({url}); pin an existing branch, tag or commit with "
            f"pretrained_cfg_overlay=dict(hf_hub_revision=...)") from e
    except RepositoryNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: repository {repo_id!r} not found at {endpoint} ({url}); check the id, or log in with "
            f"`hf auth login` if it is private or gated") from e
    except EntryNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: no such file in the repository ({url}); check the file name, or set it with "
            f"pretrained_cfg_overlay=dict(hf_hub_filename=...)") from e
    except (HfHubHTTPError, OSError) as e:
        raise PretrainedWeightsError(
            f"download of {where} from {url} failed ({type(e).__name__}: {e}); retry, or pass checkpoint_path= "
            f"a local file") from e
    except RuntimeError as e:
        # huggingface_hub 1.2.1 - 1.26 report an unreachable endpoint as "Cannot send a request, as the client has
        # been closed" (their HTTP client is fetched once, outside the retry loop; fixed in 1.27)
        if "client has been closed" not in str(e):
            raise
        raise PretrainedWeightsError(
            f"cannot get {where}: {endpoint} cannot be reached ({url}). Retry when online, point HF_HOME / cache_dir "
            f"at a cache that has it, or pass checkpoint_path= a local .safetensors file") from e


def is_google_drive_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in _DRIVE_HOSTS


def check_sha256(value: Optional[str]) -> Optional[str]:
    """A ``url_sha256`` as 64 lower-case hex digits (surrounding space removed), or None.

    Raises:
        ValueError: anything else, naming the value.
    """
    if value is None:
        return None
    digest = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"url_sha256={value!r}: expected the file's sha256 as 64 hex digits (sha256sum prints it), "
                         f"or None to record it at the first download")
    return digest


def fetch_url(url: str, directory: str, name: str, route: str, sha256: Optional[str] = None) -> Tuple[str, str]:
    """Download a release file into ``directory`` (made here; it must not exist) with gdown, and check it.

    Args:
        url: a Google Drive link (file or viewer), or any http(s) URL.
        directory: where the file is written.
        name: what the file is for (``arch.tag``), in messages.
        route: what to do instead, ending every error message.
        sha256: the sha256 the file must have (None: not checked).

    Returns:
        ``(path, sha256)``: the file (the server's name, with ``.pth`` or ``.safetensors``) and its sha256.

    Raises:
        PretrainedWeightsError: gdown missing, a failed transfer, a web page, an empty response, a file that is neither
            torch nor safetensors, another sha256. The partial download is left in ``directory``.
    """
    try:
        import gdown
    except ImportError as e:
        raise PretrainedWeightsError(
            f"downloading the weights of {name} from {url} needs gdown, an optional dependency: "
            f"pip install '{GDOWN_EXTRA}' (or pip install gdown). Without it: {route}") from e
    os.makedirs(directory)
    # gdown names the file as the server does (Google Drive's file name, else the URL's); gdown < 6 needs fuzzy=True
    # to read a Drive viewer link (.../file/d/ID/view), gdown 6 reads it and has no such argument
    fuzzy = {"fuzzy": True} if "fuzzy" in inspect.signature(gdown.download).parameters else {}
    _logger.info("%s: downloading %s", name, url)
    try:
        out = gdown.download(url, output=directory + os.sep, quiet=False, **fuzzy)
    except Exception as e:  # gdown's own errors and requests' network errors; reported, never swallowed
        drive = is_google_drive_url(url)
        why = (" Google Drive refuses a file whose daily download quota is used up (retry in a day) or that is not "
               "shared publicly." if drive and type(e).__name__ == "FileURLRetrievalError" else "")
        raise PretrainedWeightsError(
            f"download of the weights of {name} from {url} failed ({type(e).__name__}: {e}).{why} Nothing was "
            f"cached; retry, or {route}") from e
    files = [f for f in os.listdir(directory) if not f.endswith(".part")]
    if out is None or len(files) != 1:  # gdown < 5 returns None instead of raising
        raise PretrainedWeightsError(f"download of the weights of {name} from {url} failed (gdown gave no file); "
                                     f"retry, or {route}")
    path = os.path.join(directory, files[0])
    size = os.path.getsize(path)
    kind = file_kind(path)
    if kind == "html":
        title = html_title(path)
        why = ("Google Drive answers with such a page when the file's download quota is used up, when it needs a "
               "login, or when the link is not a file link" if is_google_drive_url(url) else
               "the server answered with a web page (a login, an error or a landing page), not the file")
        raise PretrainedWeightsError(
            f"{url} gave an HTML page{f' ({title!r})' if title else ''}, {size} bytes, instead of the weights "
            f"of {name}: {why}. Open the URL in a browser: retry later, or {route}")
    if size == 0:
        raise PretrainedWeightsError(
            f"{url} gave an empty response (0 bytes) instead of the weights of {name}: the URL is probably wrong "
            f"(a missing file answers so on some servers). Check it (pretrained_cfg_overlay=dict(url=...)), or {route}")
    if kind == "unknown":
        raise PretrainedWeightsError(
            f"{url} gave {size} bytes that are neither a PyTorch nor a safetensors file: not the weights of "
            f"{name}. Check the URL (pretrained_cfg_overlay=dict(url=...)), or {route}")
    sha = sha256_file(path)
    if sha256 and sha != check_sha256(sha256):
        raise PretrainedWeightsError(
            f"{url} gave a file with sha256 {sha}, but {name} expects {sha256}: the file changed at its "
            f"source, or the download was corrupted. Retry; if it persists, report it")
    extension = ".safetensors" if kind == "safetensors" else ".pth"
    final = path if path.endswith(extension) else path + extension  # the server's name, with its format's extension
    os.replace(path, final)
    return final, sha
