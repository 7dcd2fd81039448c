"""Weights published as a file at a URL (a release on Google Drive, a mirror): download once, check, convert, cache.

A tag's ``PretrainedCfg.url`` names the release file. The first ``pretrained=True`` downloads it with ``gdown``
(Google Drive's confirmation and virus-scan pages, progress bar, a ``.part`` file renamed when complete, a transfer
shorter than announced refused), checks it is what the tag describes (not an HTML page, a readable checkpoint, the
family's release format and classes), converts it with the family's converter (nothing in the file runs) and caches
the result as a ``local-dir`` model: ``model.safetensors`` + ``config.json``, which records the URL and the sha256 of
the downloaded file. Later calls read the cache without a request; so does ``HF_HUB_OFFLINE=1``.

The cache lives under the Hub cache (``HF_HUB_CACHE``, or ``cache_dir=``): ``clipdfer-url/<arch.tag>-<hash of URL>/``.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from typing import Any, Dict, Optional, Tuple

from ._hub import CONFIG_NAME, WEIGHTS_NAME, PretrainedWeightsError, _offline
from ._pretrained import PretrainedCfg
from ._safe_load import file_kind, html_title

__all__ = ["url_weights", "url_cache_entry", "is_google_drive_url", "ReleaseMismatchError", "check_sha256",
           "GDOWN_EXTRA"]

_logger = logging.getLogger(__name__)

GDOWN_EXTRA = "clipdfer[download]"
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


class ReleaseMismatchError(ValueError):
    """A readable release file that is not the one a tag describes (another dataset's classes, ...)."""


def is_google_drive_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in _DRIVE_HOSTS


def _name(cfg: PretrainedCfg) -> str:
    return f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture


def url_cache_entry(cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> str:
    """The directory that holds (or will hold) the converted weights of ``cfg.url``."""
    from huggingface_hub import constants
    root = os.path.join(os.path.expanduser(str(cache_dir or constants.HF_HUB_CACHE)), "clipdfer-url")
    digest = hashlib.sha256(cfg.url.encode()).hexdigest()[:16]
    return os.path.join(root, f"{_name(cfg)}-{digest}")


def _manual_route(cfg: PretrainedCfg, convert_command: Optional[str]) -> str:
    convert = (f", or convert it once with `{convert_command}` and load create_model('local-dir:OUT_DIR')"
               if convert_command else "")
    return (f"download {cfg.url} yourself (a browser works for Google Drive), then "
            f"create_model({_name(cfg)!r}, checkpoint_path='FILE'){convert}")


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


def _cached(entry: str, url: str, sha256: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The record of a complete cache entry for ``url`` (made from a file of ``sha256`` when given), or None."""
    try:
        with open(os.path.join(entry, CONFIG_NAME)) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    source = config.get("source") or {}
    if source.get("url") != url or not os.path.isfile(os.path.join(entry, WEIGHTS_NAME)):
        return None
    if sha256 and source.get("sha256") != sha256:
        _logger.info("%s was made from a file with sha256 %s, but %s is expected: downloading again", entry,
                     source.get("sha256"), sha256)
        return None
    return config


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, directory: str, name: str, route: str) -> str:
    """Download ``url`` into ``directory`` with gdown; the path of the complete file."""
    try:
        import gdown
    except ImportError as e:
        raise PretrainedWeightsError(
            f"downloading the weights of {name} from {url} needs gdown, an optional dependency: "
            f"pip install '{GDOWN_EXTRA}' (or pip install gdown). Without it: {route}") from e
    import inspect
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
    return os.path.join(directory, files[0])


def _check_download(path: str, cfg: PretrainedCfg, name: str, route: str) -> Tuple[str, str]:
    """Refuse what is not a checkpoint; the file renamed to its format's extension, and its sha256."""
    size = os.path.getsize(path)
    kind = file_kind(path)
    if kind == "html":
        title = html_title(path)
        why = ("Google Drive answers with such a page when the file's download quota is used up, when it needs a "
               "login, or when the link is not a file link" if is_google_drive_url(cfg.url) else
               "the server answered with a web page (a login, an error or a landing page), not the file")
        raise PretrainedWeightsError(
            f"{cfg.url} gave an HTML page{f' ({title!r})' if title else ''}, {size} bytes, instead of the weights "
            f"of {name}: {why}. Open the URL in a browser: retry later, or {route}")
    if size == 0:
        raise PretrainedWeightsError(
            f"{cfg.url} gave an empty response (0 bytes) instead of the weights of {name}: the URL is probably wrong "
            f"(a missing file answers so on some servers). Check it (pretrained_cfg_overlay=dict(url=...)), or {route}")
    if kind == "unknown":
        raise PretrainedWeightsError(
            f"{cfg.url} gave {size} bytes that are neither a PyTorch nor a safetensors file: not the weights of "
            f"{name}. Check the URL (pretrained_cfg_overlay=dict(url=...)), or {route}")
    sha = _sha256(path)
    if cfg.url_sha256 and sha != check_sha256(cfg.url_sha256):
        raise PretrainedWeightsError(
            f"{cfg.url} gave a file with sha256 {sha}, but {name} expects {cfg.url_sha256}: the file changed at its "
            f"source, or the download was corrupted. Retry; if it persists, report it")
    extension = ".safetensors" if kind == "safetensors" else ".pth"
    final = path if path.endswith(extension) else path + extension  # the server's name, with its format's extension
    os.replace(path, final)
    return final, sha


def _convert(model, path: str, out_dir: str, cfg: PretrainedCfg, name: str, route: str) -> None:
    """The family's converter writes ``out_dir``; a file it cannot read is reported as a bad download."""
    from ._safe_load import UnsafeCheckpointError
    try:
        model.convert_release(path, out_dir, cfg)
    except (UnsafeCheckpointError, PretrainedWeightsError):
        raise
    except ReleaseMismatchError as e:
        raise PretrainedWeightsError(
            f"the file downloaded from {cfg.url} is not the weights of {name}: {e}. Nothing was cached") from e
    except (ValueError, RuntimeError, KeyError) as e:
        raise PretrainedWeightsError(
            f"the file downloaded from {cfg.url} ({os.path.getsize(path)} bytes) is not the weights of {name}: {e}. "
            f"A truncated or interrupted download looks like this too. Nothing was cached; retry, check the URL "
            f"(pretrained_cfg_overlay=dict(url=...)), or {route}") from e


def url_weights(model, cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """The cached, converted weights of ``cfg.url`` (downloaded and converted on the first call).

    Args:
        model: the model the weights are for; its ``convert_release`` converts the downloaded file.
        cfg: a pretrained cfg with ``url``.
        cache_dir: cache root (default: the Hub cache).

    Returns:
        ``(path, config)``: the cached ``model.safetensors`` and its ``config.json`` (``config["source"]`` holds the
        URL, the sha256 and size of the downloaded file).

    Raises:
        PretrainedWeightsError: offline without a cached copy, gdown missing, a failed download, an HTML page, a
            file that is not the tag's weights (another release, truncated, unreadable); each names the URL, the
            cache path and the manual route. Nothing is cached then.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    from filelock import FileLock

    name = _name(cfg)
    sha256 = check_sha256(cfg.url_sha256)
    entry = url_cache_entry(cfg, cache_dir)
    route = _manual_route(cfg, getattr(model, "release_convert_command", None))
    config = _cached(entry, cfg.url, sha256)
    if config is not None:
        return os.path.join(entry, WEIGHTS_NAME), config
    if _offline():
        other = _cached(entry, cfg.url)  # an entry made from another file than the pinned one
        where = (f"are in the cache ({entry}) only as made from a file of sha256 {other['source'].get('sha256')}, "
                 f"not the pinned {sha256}," if other is not None else f"are not in the cache ({entry})")
        raise PretrainedWeightsError(
            f"the weights of {name} {where} and offline mode is on (HF_HUB_OFFLINE), so "
            f"{cfg.url} cannot be downloaded. Run once online (or unset HF_HUB_OFFLINE), point cache_dir / "
            f"HF_HUB_CACHE at a cache that has them, or {route}")
    root = os.path.dirname(entry)
    try:
        os.makedirs(root, exist_ok=True)
        lock = FileLock(entry + ".lock")
        lock.acquire()
    except OSError as e:
        raise PretrainedWeightsError(
            f"cannot write the cache {root} for the weights of {name} ({type(e).__name__}: {e}). Point cache_dir= "
            f"(or HF_HUB_CACHE) at a writable directory, or {route}") from e
    try:  # one download per entry, also across processes (torchrun ranks)
        config = _cached(entry, cfg.url, sha256)
        if config is not None:
            return os.path.join(entry, WEIGHTS_NAME), config
        prefix = f".tmp-{os.path.basename(entry)}-"
        for stale in os.listdir(root):  # left by a killed download of this entry (the lock says none is running)
            if stale.startswith(prefix):
                shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=prefix, dir=root) as tmp:
            raw, sha = _check_download(_download(cfg.url, os.path.join(tmp, "download"), name, route), cfg, name,
                                       route)
            size = os.path.getsize(raw)
            out = os.path.join(tmp, "converted")
            _convert(model, raw, out, cfg, name, route)
            with open(os.path.join(out, CONFIG_NAME)) as f:
                config = json.load(f)
            config["source"] = {"url": cfg.url, "sha256": sha, "size": size}  # what was downloaded, not converted
            with open(os.path.join(out, CONFIG_NAME), "w") as f:
                json.dump(config, f, indent=2)
                f.write("\n")
            if os.path.isdir(entry):  # an incomplete entry (a crash of an older version): replaced
                shutil.rmtree(entry)
            os.replace(out, entry)  # the entry appears complete or not at all
        terms = f" {cfg.notes}" if cfg.notes else ""
        _logger.warning("%s: downloaded %s (sha256 %s, %d bytes), converted and cached in %s. Licence: %s (%s).%s",
                        name, cfg.url, sha, size, entry, cfg.license or "not stated", cfg.origin_url or cfg.url,
                        terms)
    finally:
        lock.release()
    return os.path.join(entry, WEIGHTS_NAME), config


def save_state_dict_file(path: str, out_dir: str, cfg: PretrainedCfg) -> None:
    """A downloaded state dict file (safetensors, or a torch file read without running code) -> ``out_dir``:
    ``model.safetensors`` and a ``config.json`` recording the tag's cfg and the weights state the file records."""
    from safetensors.torch import save_file

    from ..version import __version__
    from ._builder import (
        CLASS_TEXTS_KEY, WEIGHTS_STATE_KEY, _metadata, load_state_dict_file, recorded_weights_state,
        strip_wrapper_prefixes,
    )
    state_dict = strip_wrapper_prefixes(load_state_dict_file(path))
    state = recorded_weights_state(path) or ("finetuned" if cfg.finetuned else "loaded")
    metadata = {"format": "pt", WEIGHTS_STATE_KEY: state}
    texts = _metadata(path).get(CLASS_TEXTS_KEY)
    if texts is not None:  # the class texts the weights were trained with travel with them
        metadata[CLASS_TEXTS_KEY] = texts
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, os.path.join(out_dir, WEIGHTS_NAME),
              metadata=metadata)
    with open(os.path.join(out_dir, CONFIG_NAME), "w") as f:
        json.dump({"architecture": cfg.architecture, "weights": state, "clipdfer_version": __version__,
                   "pretrained_cfg": cfg.to_dict()}, f, indent=2)
        f.write("\n")
