"""Files: writing one atomically, its sha256, and what kind of weights file it is. Imports nothing of clipdfer."""

import hashlib
import json
import os
import re
import secrets
from typing import Any, Callable

__all__ = ["atomic_write", "write_json", "sha256_file", "file_kind", "html_title"]


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Make ``path`` by ``write(tmp)``, ``tmp`` a new file beside it, flushed to disk and renamed to ``path``; on an
    error ``tmp`` is removed and ``path`` untouched. The file gets the umask's permissions, not a temporary file's 0600.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb"):  # made here first: it gets a new file's mode, which the writer's library may not give
            pass
        mode = os.stat(tmp).st_mode & 0o777
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, data: Any, indent: int = 2) -> None:
    """``data`` as strict JSON (NaN and infinity are errors, not the bare tokens strict parsers refuse), atomically."""
    text = json.dumps(data, indent=indent, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def sha256_file(path: str) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (what ``sha256sum`` prints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_kind(path: str) -> str:
    """What a weights file is from its first bytes: ``'html'`` (a web page), ``'torch'`` (a ``torch.save`` zip or legacy
    pickle), ``'safetensors'`` or ``'unknown'``."""
    with open(path, "rb") as f:
        head = f.read(4096)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return "html"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def html_title(path: str) -> str:
    """The ``<title>`` of an HTML file ('' when it has none)."""
    with open(path, "rb") as f:
        match = re.search(rb"<title[^>]*>(.*?)</title>", f.read(1 << 16), re.S | re.I)
    return " ".join(match.group(1).decode("utf-8", "replace").split()) if match else ""
