"""Many sources: one bad source does not stop the others, results saved as they come, runs that resume, shards.

    from clipdfer.inference import BatchRun, Predictor, expand_sources
    run = BatchRun(Predictor("clip_zeroshot_vitb32"), expand_sources(["videos/"]), out_dir="results")
    for item in run:                     # this process's share, in order; each result written as it is done
        print(item.index, item.result.source, "failed" if item.failed else "ok")
    run.write_summary()                  # results/summary.csv

Sharding: under ``torchrun --nproc_per_node N`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE``) each process
takes every N-th source and its own GPU (``cuda:LOCAL_RANK``); ``shard=(i, n)`` (``--shard i/n``, 0 <= i < n) does
the same for independent jobs such as a Slurm job array; both together split each shard among the processes. The
shares are disjoint and together hold every source once.
"""

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .results import FailedSource, Prediction, result_from_dict
from .sources import source_name

__all__ = ["BatchRun", "BatchItem", "predict_many", "parse_shard", "process_share", "share_indices", "output_names",
           "SUMMARY_COLUMNS"]

_logger = logging.getLogger(__name__)
SUMMARY_COLUMNS = ("source", "faces", "frames", "seconds", "status", "error", "processing_s", "result")
# Errors that are not one source's fault: they stop the run instead of being recorded against every source.
_FATAL = (ImportError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))


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
    """``((i, n), (rank, world))``: the shard this job takes (default 0/1) and this process's place among the
    ``WORLD_SIZE`` processes of a torchrun launch, which split the shard among them."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return shard or (0, 1), (rank, world)


def share_indices(count: int, shard: Tuple[int, int] = (0, 1), rank: int = 0, world: int = 1) -> List[int]:
    """The indices of ``count`` sources that shard ``i/n`` holds (every n-th from the i-th) and, of those, the ones
    process ``rank`` of ``world`` takes (every world-th). A shard is the same set of sources however many processes
    run it, so shards run on different machines (one with torchrun, one without) still cover every source once."""
    index, n = shard
    return [i for i in range(count) if i % n == index][rank::world]


def _safe(text: str) -> str:
    """A file name's part: letters and digits of any script, '.', '-'; the rest (spaces, separators, bytes that are
    not UTF-8) as '_'."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "source"


def output_names(sources: Sequence) -> List[str]:
    """A distinct file stem per source, the same for the same list in every process: the file's name without its
    extension; where names collide, the path from the colliding files' common folder (``a__clip``, ``b__clip``),
    then with the extension (``clip_mp4``, ``clip_avi``), then with a hash of the absolute path."""
    from .sources import is_live
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
    """One source of a batch: its index in the whole list, the source, its result, and whether the result was read
    back from a previous run's file instead of computed."""
    index: int
    source: object
    result: Union[Prediction, FailedSource]
    reused: bool = False

    @property
    def failed(self) -> bool:
        return isinstance(self.result, FailedSource)


def _write_atomically(path: str, write, **open_kwargs) -> None:
    """Write a file through ``write(f)`` into a temporary file in the same folder, then rename it to ``path``: a
    reader sees the old file or the new one, never part of one; on an error the temporary file is removed."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", **open_kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _identity(source) -> Optional[str]:
    """What makes two sources the same one for resuming: a local path's real path, a URL itself; None for sources
    that are never resumed (tensors, cameras)."""
    from .sources import is_live
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return text if is_live(text) else os.path.realpath(text)
    return None


def _stat(source) -> Optional[Dict]:
    """What changes when a local source is replaced or edited: a file's size and modification time, a folder's
    modification time (adding or removing a frame changes it)."""
    key = _identity(source)
    if key is None or not os.path.exists(key):
        return None
    st = os.stat(key)
    return {"mtime_ns": st.st_mtime_ns} if os.path.isdir(key) else {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _saved_identity(data: Dict) -> Optional[str]:
    """The identity of the source of a saved result (``source_path``, written with it; else from its name)."""
    return data["source_path"] if "source_path" in data else _identity(data.get("source", ""))


class BatchRun:
    """Predict on this process's share of ``sources``, one source at a time, each failure recorded and skipped.

    Args:
        predictor: the :class:`clipdfer.inference.Predictor` to run.
        sources: every source of the job, in order (see :func:`clipdfer.inference.expand_sources`); every process
            of a sharded job must get the same list.
        out_dir: write each source's result as ``DIR/<name>.json`` as soon as it is done (:func:`output_names`),
            with the settings it was made with, and a ``summary.csv`` with :meth:`write_summary`.
        shard: ``(i, n)``: take the i-th of n shares (see :func:`share_indices`; torchrun's processes split it).
        overwrite: run every source again, even those with a result in ``out_dir``.
        retry_failed: run the sources whose result in ``out_dir`` records a failure again.
        **run_kwargs: for :meth:`Predictor.run` (``fps``, ``start``, ``end``, ``folder_fps``, ``progress`` ...).

    Resuming: a source is not run again when a file in ``out_dir`` holds its result (found by the source's real path,
    whatever its file is named), made from the source as it is now (same size and modification time) with the same
    settings (:attr:`settings`: the model, its classes and weights, the window, the face detector's, the tracker's
    and the sampling's settings). Tensors and cameras are always run.

    A source fails (and is recorded as a :class:`FailedSource`) when it cannot be predicted: no face, corrupt, no
    video stream, unreadable. Errors that are not one source's fault (a missing package, out of memory, a result that
    cannot be written) stop the run; the results written so far stay.

    Raises:
        ValueError: bad ``run_kwargs`` (``fps``, ``start``, ``end``, ``folder_fps``), or ``out_dir`` is a file.
    """

    def __init__(self, predictor, sources: Sequence, out_dir: Optional[str] = None,
                 shard: Optional[Tuple[int, int]] = None, overwrite: bool = False, retry_failed: bool = False,
                 **run_kwargs):
        from .sources import check_run_args
        check_run_args(**{k: v for k, v in run_kwargs.items() if k in ("fps", "start", "end", "folder_fps")})
        self.predictor, self.sources = predictor, list(sources)
        self.out_dir, self.overwrite, self.retry_failed, self.run_kwargs = out_dir, overwrite, retry_failed, run_kwargs
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
        keys = ("fps", "start", "end", "folder_fps")
        reading = {k: self.run_kwargs.get(k) for k in keys if k in self.run_kwargs}
        return json.loads(json.dumps({**self.predictor.settings, **reading}))

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
        """The result file of source ``index``: the file that holds its result already, else ``<name>.json`` (None
        without ``out_dir``)."""
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
        if data.get("source_stat") != _stat(self.sources[index]):
            _logger.warning("%s changed since its result in %s was made: running it again",
                            source_name(self.sources[index]), path)
            return None
        if data.get("settings") != self.settings:
            self._settings_changed += 1
            if self._settings_changed == 1:
                old, new = data.get("settings") or {}, self.settings
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
            result = self.predictor.run(source, **self.run_kwargs)
        except _FATAL:
            raise
        except Exception as e:  # one source's failure is its result; the run goes on
            _logger.info("%s failed: %s: %s", source_name(source), type(e).__name__, e)
            result = FailedSource(source_name(source), str(e), type(e).__name__)
        if self.out_dir:
            path = self.path(index)
            data = {**result.to_dict(), "source_path": _identity(source), "source_stat": _stat(source),
                    "settings": self.settings}
            _write_atomically(path, lambda f: json.dump(data, f, indent=2))
            if _identity(source) is not None:
                self._index()[_identity(source)] = path
        return result

    def write_summary(self, path: Optional[str] = None) -> str:
        """Write the table of every source (not only this process's share) from the files in ``out_dir``: source,
        faces, frames, seconds (of video read), status (``ok``, ``failed``, ``pending``: no result with these
        settings yet), error, processing_s, result (the file); atomically, UTF-8 (bytes of file names that are not
        UTF-8 as backslash escapes). Returns its path.

        Raises:
            ValueError: the run has no ``out_dir`` and no ``path`` is given.
        """
        path = path or (os.path.join(self.out_dir, "summary.csv") if self.out_dir else None)
        if path is None:
            raise ValueError("write_summary needs out_dir (or a path)")
        self._found = None  # other processes may have written results since

        def write(f) -> None:
            writer = csv.writer(f)
            writer.writerow(SUMMARY_COLUMNS)
            for i, source in enumerate(self.sources):
                result = self.saved(i) if _identity(source) is not None else self._saved_by_name(i)
                name = os.path.basename(self.path(i)) if result is not None else ""
                if result is None:
                    writer.writerow([source_name(source), "", "", "", "pending", "", "", ""])
                elif isinstance(result, FailedSource):
                    writer.writerow([result.source, "", "", "", "failed", result.error, "", name])
                else:
                    writer.writerow([result.source, len(result.faces), result.frames_used, f"{result.seconds:.3f}",
                                     "ok", "", f"{result.timings.get('total_s', 0.0):.3f}", name])

        _write_atomically(path, write, newline="", encoding="utf-8", errors="backslashreplace")
        return path


def predict_many(sources: Sequence, model: Union[str, torch.nn.Module, None] = None,
                 out_dir: Optional[str] = None, shard: Optional[Tuple[int, int]] = None, overwrite: bool = False,
                 retry_failed: bool = False, fps: Optional[float] = 8.0, start: Optional[float] = None,
                 end: Optional[float] = None, folder_fps: float = 25.0, **predictor_kwargs
                 ) -> List[Union[Prediction, FailedSource]]:
    """Predict on many sources with one model: a result per source of this process's share, in order; a source
    that fails gives a :class:`FailedSource` instead of stopping the others.

    Args:
        sources: files, folders, globs, text files of paths ... (expanded with
            :func:`clipdfer.inference.expand_sources`).
        model: as :class:`clipdfer.inference.Predictor` (None: its default, :data:`DEFAULT_MODEL`).
        out_dir / shard / overwrite / retry_failed: see :class:`BatchRun` (with ``out_dir``, ``summary.csv`` is
            written at the end).
        fps / start / end / folder_fps: see :meth:`Predictor.run`.
        **predictor_kwargs: for :class:`clipdfer.inference.Predictor` (``pretrained``, ``device``, ``dtype`` ...).
    """
    from .predictor import DEFAULT_MODEL, Predictor
    from .sources import expand_sources
    predictor = Predictor(model if model is not None else DEFAULT_MODEL, **predictor_kwargs)
    run = BatchRun(predictor, expand_sources(sources), out_dir, shard, overwrite, retry_failed, fps=fps, start=start,
                   end=end, folder_fps=folder_fps)
    results = [item.result for item in run]
    if out_dir:
        run.write_summary()
    return results
