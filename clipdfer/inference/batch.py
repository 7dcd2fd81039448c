"""Many sources: each failure recorded and skipped, results saved as they come, runs that resume, shards
(docs/predict.md, "Many videos").

    run = BatchRun(Predictor("clip_zeroshot_vitb32"), expand_sources(["videos/"]), out_dir="results")
    for item in run:                     # this process's share, in order; each result written as it is done
        print(item.index, item.result.source, "failed" if item.failed else "ok")
    run.write_summary()                  # results/summary.csv
"""

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .._files import atomic_write
from ..distributed import launch_env
from .outputs import VideoOutput
from .results import FORMAT_VERSION, FailedSource, Prediction, result_from_dict
from .settings import FaceSettings, ReadSettings, WindowSettings, legacy_settings, settings_dict, split_settings
from .sources import is_live, source_name

__all__ = ["BatchRun", "BatchItem", "predict_many", "parse_shard", "process_share", "share_indices", "output_names",
           "SUMMARY_COLUMNS"]

_logger = logging.getLogger(__name__)
SUMMARY_COLUMNS = ("source", "faces", "frames", "seconds", "status", "error", "processing_s", "result", "settings")
# Errors that are not one source's fault: they stop the run instead of being recorded against every source.
_FATAL = (ImportError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
# Errors that explain what is wrong with a source (unreadable, no face, ...); any other is a bug of ours
_SOURCE_ERRORS = (ValueError, OSError, RuntimeError, EOFError)


def _is_source_error(e: Exception) -> bool:
    """Whether ``e`` says what is wrong with a source: ours, or a decoder's (PyAV, OpenCV) about the file or stream."""
    libraries = [getattr(sys.modules.get("av"), "FFmpegError", None), getattr(sys.modules.get("cv2"), "error", None)]
    return isinstance(e, _SOURCE_ERRORS + tuple(c for c in libraries if isinstance(c, type)))


def parse_shard(text: str) -> Tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``: the i-th of n shares, 0 <= i < n (``--shard 0/4`` ... ``--shard 3/4``).

    Raises:
        ValueError: not of the form i/n with 0 <= i < n.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4 ... 3/4 (for a Slurm array: "
                         f"--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with ids from 0)")
    return int(match[1]), int(match[2])


def process_share(shard: Optional[Tuple[int, int]] = None) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((i, n), (rank, world))``: this job's shard (default 0/1) and this process's place in a torchrun launch."""
    env = launch_env()
    return shard or (0, 1), (env.rank, env.world)


def share_indices(count: int, shard: Tuple[int, int] = (0, 1), rank: int = 0, world: int = 1) -> List[int]:
    """Indices of ``count`` sources in shard ``i/n`` (every n-th from the i-th), of which process ``rank`` of ``world``
    takes every world-th. A shard is the same sources however many processes run it."""
    index, n = shard
    return [i for i in range(count) if i % n == index][rank::world]


def _safe(text: str) -> str:
    """A file name's part: letters and digits of any script, '.', '-'; the rest as '_'."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "source"


def output_names(sources: Sequence) -> List[str]:
    """A distinct file stem per source, the same in every process for the same list: the name without its extension; on
    collisions the path from the common folder (``a__clip``), then the extension (``clip_mp4``), then a path hash."""
    paths = [os.path.abspath(s) if isinstance(s, (str, os.PathLike)) and not is_live(os.fspath(s)) else None
             for s in sources]

    def split(path: str) -> Tuple[str, str]:
        return ("", "") if path is None else ((path, "") if os.path.isdir(path) else os.path.splitext(path))

    def level(i: int, depth: int, group: List[int]) -> str:
        if paths[i] is None:
            name = _safe(source_name(sources[i]).split("://", 1)[-1])
        elif depth == 0:
            name = _safe(os.path.basename(split(paths[i])[0]))
        else:
            root = os.path.commonpath([os.path.dirname(paths[j]) for j in group if paths[j] is not None])
            stem, ext = split(os.path.relpath(paths[i], root))
            name = "__".join(_safe(part) for part in stem.split(os.sep))
            name += "_" + _safe(ext) if depth >= 2 and ext else ""
        key = paths[i] or f"{name}|{i}"  # a path names itself; other sources (tensors, cameras) by their place
        return name if depth < 3 else f"{name}-{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"

    names = [level(i, 0, [i]) for i in range(len(sources))]
    for depth in (1, 2, 3):
        groups: Dict[str, List[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)  # case-insensitive file systems (macOS, Windows)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        for group in clashes:
            for i in group:
                names[i] = level(i, depth, group)
    return names


@dataclasses.dataclass
class BatchItem:
    """One source of a batch: its index in the whole list, the source, its result, and whether that was read back."""
    index: int
    source: object
    result: Union[Prediction, FailedSource]
    reused: bool = False

    @property
    def failed(self) -> bool:
        return isinstance(self.result, FailedSource)


def _write_json(path: str, data) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)  # strict JSON: a NaN is an error, not a bare token
    _written(path, write)


def _written(path: str, write) -> None:
    """``atomic_write``, with an error that names the file and says what is kept (a full disk, permissions)."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise OSError(f"cannot write {path} ({e.strerror or e}): the results written before it are intact; free "
                      f"space (or fix the folder's permissions) and run the same command again to go on") from e


def _identity(source) -> Optional[str]:
    """A source's identity for resuming: a path's real path, a URL; None for tensors and cameras (never resumed)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return text if is_live(text) else os.path.realpath(text)
    return None


def _stat(source) -> Optional[Dict]:
    """What changes when a local source is replaced or edited: a file's size and mtime; a folder's mtime and the
    names, sizes and mtimes of its files (a frame overwritten in place changes no folder's mtime)."""
    key = _identity(source)
    if key is None or not os.path.exists(key):
        return None
    st = os.stat(key)
    if not os.path.isdir(key):
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    listing = hashlib.sha1()
    for entry in sorted(os.scandir(key), key=lambda e: e.name):
        if entry.is_file():
            info = entry.stat()
            listing.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return {"mtime_ns": st.st_mtime_ns, "files": listing.hexdigest()}


def _flat(settings: Dict, prefix: str = "") -> Dict:
    """``{"faces": {"margin": 0.25}}`` -> ``{"faces.margin": 0.25}``: settings as the lines a difference names."""
    out = {}
    for k, v in settings.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _saved_identity(data: Dict) -> Optional[str]:
    """The identity of the source of a saved result (``source_path``, written with it; else from its name)."""
    return data["source_path"] if "source_path" in data else _identity(data.get("source", ""))


class BatchRun:
    """Predict on this process's share of ``sources``, one at a time; a source that fails is a :class:`FailedSource`.

    A source with a result in ``out_dir`` made with the same :attr:`settings` from the same file (size, mtime) is not
    run again. Errors that are not one source's fault (a missing package, out of memory, a write) stop the run.

    Args:
        predictor: the :class:`Predictor` to run.
        sources: every source of the job, in order; every process of a sharded job must get the same list.
        out_dir: folder for ``<name>.json`` per source, written when it is done, and ``summary.csv``.
        shard: ``(i, n)``: the i-th of n shares (:func:`share_indices`).
        overwrite: run every source again, even those with a result in ``out_dir``.
        retry_failed: run again the sources whose saved result is a failure.
        reading: which frames are read (:class:`ReadSettings`).
        progress, annotate, on_window: as :meth:`Predictor.run`.
        **settings: flat :class:`ReadSettings` fields (deprecated: a FutureWarning; still applied).

    Raises:
        ValueError: ``out_dir`` is a file; ``annotate`` cannot be written.
    """

    def __init__(self, predictor, sources: Sequence, out_dir: Optional[str] = None,
                 shard: Optional[Tuple[int, int]] = None, overwrite: bool = False, retry_failed: bool = False,
                 reading: Optional[ReadSettings] = None, progress: bool = False,
                 annotate: Union[None, str, VideoOutput] = None, on_window=None, **settings):
        self.reading = legacy_settings("BatchRun", settings, reading=reading)[0]
        self.predictor, self.sources = predictor, list(sources)
        self.out_dir, self.overwrite, self.retry_failed = out_dir, overwrite, retry_failed
        if annotate is not None and not isinstance(annotate, VideoOutput):
            annotate = VideoOutput(annotate, "annotate", self.sources)
        self.run_kwargs = dict(progress=progress, annotate=annotate, on_window=on_window)
        self.shard, (self.rank, self.world) = process_share(shard)
        self.names = output_names(self.sources)
        self.indices = share_indices(len(self.sources), self.shard, self.rank, self.world)
        self._found: Optional[Dict[str, str]] = None
        self._settings_changed = 0
        if out_dir:
            if os.path.exists(out_dir) and not os.path.isdir(out_dir):
                raise ValueError(f"--out {out_dir!r} is a file: give a folder for the results (it is made if needed)")
            os.makedirs(out_dir, exist_ok=True)

    @property
    def settings(self) -> Dict:
        """What a result depends on besides its source: the predictor's settings and the reading's."""
        return json.loads(json.dumps({**self.predictor.settings, "reading": settings_dict(self.reading)}))

    def rescan(self) -> None:
        """Read ``out_dir`` again on the next lookup (other processes may have written results since)."""
        self._found = None

    def _index(self) -> Dict[str, str]:
        """Source identity -> the result file that holds it, for the results already in ``out_dir``."""
        if self._found is None:
            self._found = {}
            for name in sorted(os.listdir(self.out_dir)):
                if not name.endswith(".json") or name.startswith("."):
                    continue
                data = self._load(os.path.join(self.out_dir, name))
                key = _saved_identity(data) if data else None
                if key:
                    self._found.setdefault(key, os.path.join(self.out_dir, name))
        return self._found

    @staticmethod
    def _load(path: str) -> Optional[Dict]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "source" in data else None

    def path(self, index: int) -> Optional[str]:
        """The result file of source ``index``: the one that holds its result, else ``<name>.json``; None without
        ``out_dir``."""
        if not self.out_dir:
            return None
        key = _identity(self.sources[index])
        if key is not None and key in self._index():
            return self._index()[key]
        path = os.path.join(self.out_dir, f"{self.names[index]}.json")
        data = self._load(path) if key is not None and os.path.exists(path) else None
        if data is not None and _saved_identity(data) != key:
            digest = hashlib.sha1(str(key or index).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            path = os.path.join(self.out_dir, f"{self.names[index]}-{digest}.json")  # the name holds another source
        return path

    def saved(self, index: int) -> Optional[Union[Prediction, FailedSource]]:
        """The result of source ``index`` in ``out_dir``, if one was made with these settings (else None)."""
        key = _identity(self.sources[index])
        if not self.out_dir or key is None or key not in self._index():
            return None
        path = self._index()[key]
        data = self._load(path)
        try:
            result = result_from_dict(data)
        except ValueError as e:
            _logger.warning("%s is not a complete result (%s): running its source again", path, e)
            return None
        if data.get("format_version", 1) != FORMAT_VERSION and isinstance(result, Prediction):
            _logger.warning("%s holds a result of format %s (this clipdfer writes %d, with every face's boxes): "
                            "running its source again", path, data.get("format_version", 1), FORMAT_VERSION)
            return None
        if data.get("source_stat") != _stat(self.sources[index]):
            _logger.warning("%s changed since its result in %s was made: running it again",
                            source_name(self.sources[index]), path)
            return None
        if data.get("settings") != self.settings:
            self._settings_changed += 1
            if self._settings_changed == 1:
                old, new = _flat(data.get("settings") or {}), _flat(self.settings)
                diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                                 if old.get(k) != new.get(k))
                _logger.warning("results in %s were made with other settings (%s): running their sources again",
                                self.out_dir, diff or "unknown")
            return None
        return result

    def _saved_by_name(self, index: int) -> Optional[Union[Prediction, FailedSource]]:
        """The result in ``<name>.json`` of a source that is never resumed (a tensor, a camera), for the summary."""
        data = self._load(self.path(index)) if self.out_dir and os.path.exists(self.path(index)) else None
        try:
            return result_from_dict(data) if data is not None else None
        except ValueError:
            return None

    def __iter__(self) -> Iterator[BatchItem]:
        for i in self.indices:
            if not self.overwrite:
                result = self.saved(i)
                if result is not None and not (self.retry_failed and isinstance(result, FailedSource)):
                    yield BatchItem(i, self.sources[i], result, reused=True)
                    continue
            yield BatchItem(i, self.sources[i], self._run(i))

    def _run(self, index: int) -> Union[Prediction, FailedSource]:
        source = self.sources[index]
        try:
            result = self.predictor.run(source, self.reading, **self.run_kwargs)
        except _FATAL:
            raise
        except Exception as e:  # one source's failure is its result; the run goes on
            if _is_source_error(e):  # they say what is wrong with the source (-v: with the traceback)
                _logger.info("%s failed: %s: %s", source_name(source), type(e).__name__, e, exc_info=True)
            else:  # an error of ours, never hidden: its traceback is shown whatever the verbosity
                _logger.error("%s failed on an internal error (please report it with this traceback); the other "
                              "sources go on", source_name(source), exc_info=True)
            result = FailedSource(source_name(source), str(e), type(e).__name__)
        if self.out_dir:
            path = self.path(index)
            data = {**result.to_dict(), "source_path": _identity(source), "source_stat": _stat(source),
                    "settings": self.settings}
            _write_json(path, data)
            if _identity(source) is not None:
                self._index()[_identity(source)] = path
        return result

    def write_summary(self, path: Optional[str] = None) -> str:
        """Write ``summary.csv``: every source of the job (not only this share), then every other result in
        ``out_dir`` (earlier runs' sources); returns its path.

        Columns: source, faces, frames, seconds, status (``ok``, ``failed``, ``pending``: no result with these settings
        yet), error, processing_s, result (the file), settings (``same``: made with this run's settings; ``other``:
        e.g. other weights). Written atomically in UTF-8 (file-name bytes that are not UTF-8 as backslash escapes).

        Raises:
            ValueError: the run has no ``out_dir`` and no ``path`` is given.
        """
        path = path or (os.path.join(self.out_dir, "summary.csv") if self.out_dir else None)
        if path is None:
            raise ValueError("write_summary needs out_dir (or a path)")
        self.rescan()  # other processes may have written results since
        rows, listed = [], set()
        for i, source in enumerate(self.sources):
            result = self.saved(i) if _identity(source) is not None else self._saved_by_name(i)
            if result is None:
                rows.append([source_name(source), "", "", "", "pending", "", "", "", ""])
                continue
            listed.add(os.path.abspath(self.path(i)))
            rows.append(_summary_row(result, os.path.basename(self.path(i)), "same"))
        for name in sorted(os.listdir(self.out_dir)) if self.out_dir else []:
            file = os.path.join(self.out_dir, name)
            data = self._load(file) if name.endswith(".json") and os.path.abspath(file) not in listed else None
            try:
                result = result_from_dict(data) if data is not None else None
            except ValueError:
                continue
            if result is not None:
                rows.append(_summary_row(result, name, "same" if data.get("settings") == self.settings else "other"))

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
                csv.writer(f).writerows([SUMMARY_COLUMNS, *rows])

        _written(path, write)
        return path


def _summary_row(result: Union[Prediction, FailedSource], file: str, settings: str) -> List:
    if isinstance(result, FailedSource):
        return [result.source, "", "", "", "failed", result.error, "", file, settings]
    return [result.source, len(result.faces), result.frames_used, f"{result.seconds:.3f}", "ok", "",
            f"{result.timings.get('total_s', 0.0):.3f}", file, settings]


def predict_many(sources: Sequence, model: Union[str, torch.nn.Module, None] = None,
                 out_dir: Optional[str] = None, shard: Optional[Tuple[int, int]] = None, overwrite: bool = False,
                 retry_failed: bool = False, *, reading: Optional[ReadSettings] = None,
                 faces: Optional[FaceSettings] = None, windows: Optional[WindowSettings] = None, **kwargs
                 ) -> List[Union[Prediction, FailedSource]]:
    """Predict on many sources with one model: a result per source of this process's share, in order (a source that
    fails gives a :class:`FailedSource`).

    Args:
        sources: files, folders, globs, text files of paths ... (:func:`expand_sources`).
        model: as :class:`Predictor`; None: :data:`DEFAULT_MODEL`.
        out_dir, shard, overwrite, retry_failed: as :class:`BatchRun` (``summary.csv`` written at the end).
        reading, faces, windows: the settings objects.
        **kwargs: settings fields (as to :func:`clipdfer.predict`), and :class:`Predictor`'s ``pretrained``,
            ``checkpoint``, ``device``, ``dtype``, ``live``, ``background``.
    """
    from .predictor import DEFAULT_MODEL, Predictor
    from .sources import expand_sources
    own = ("pretrained", "checkpoint", "device", "dtype", "live", "background")
    reading, faces, windows = split_settings({k: v for k, v in kwargs.items() if k not in own}, reading, faces,
                                             windows)
    predictor = Predictor(model if model is not None else DEFAULT_MODEL, faces=faces, windows=windows,
                          **{k: v for k, v in kwargs.items() if k in own})
    run = BatchRun(predictor, expand_sources(sources), out_dir, shard, overwrite, retry_failed, reading)
    results = [item.result for item in run]
    if out_dir:
        run.write_summary()
    return results
