"""Official dataset layouts -> clipdfer annotation files (``FRAME_FOLDER NUM_FRAMES LABEL``, labels 0-based).

DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv`` (``video_name``, ``label`` 1-based in the order
happiness, sadness, neutral, anger, surprise, disgust, fear), frames under ``Clip/clip_224x224/NNNNN/``.

FERV39k: ``4_setups/All_scenes/{train,test}_All.csv``, lines ``<Scene>/<Emotion>/<id> <Emotion>``, frames under
``2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>/``.

MAFW (single-label): ``Train & Test Set/single/no_caption/set_{1..5}/{train,test}.txt``, lines ``<clip>.mp4 <emotion>``,
frames under ``data/frames/<clip>/`` or videos under ``data/clips/``.
"""

import csv
import os
from typing import List

from .._files import atomic_write
from .datasets import ClipRecord
from .io import count_video_frames, list_frames
from .labels import FERV39K_CLASSES, MAFW_CLASSES

__all__ = ["dfew_records", "ferv39k_records", "mafw_records", "write_annotations", "prepare"]

_FERV39K_WORDS = {"Happy": "happiness", "Sad": "sadness", "Neutral": "neutral", "Angry": "anger",
                  "Surprise": "surprise", "Disgust": "disgust", "Fear": "fear"}


def dfew_records(root: str, fold: int, split: str) -> List[ClipRecord]:
    """The clips of one DFEW fold and split (``train`` or ``test``), with their frame counts read from disk."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    csv_path = os.path.join(root, "EmoLabel_DataSplit", f"{split}(single-labeled)", f"set_{fold}.csv")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path!r} not found: ROOT must be the DFEW directory that holds "
                                f"EmoLabel_DataSplit/ and Clip/clip_224x224/")
    records = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel's) is skipped
        for n, row in enumerate(csv.DictReader(f), 2):
            try:
                name, label = str(int(row["video_name"])).zfill(5), int(row["label"]) - 1
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{csv_path}:{n}: expected integer columns video_name,label; got {row}") from e
            if not 0 <= label < 7:
                raise ValueError(f"{csv_path}:{n}: label {label + 1} is outside DFEW's 1..7")
            folder = os.path.join(root, "Clip", "clip_224x224", name)
            records.append(ClipRecord(folder, len(list_frames(folder)), label))
    return records


def write_annotations(records: List[ClipRecord], path: str) -> None:
    """Write records as an annotation file, atomically: absolute paths, or relative to the file's folder where the
    absolute one holds a space (the format separates fields by spaces).

    Raises:
        ValueError: a clip's path holds a space even relative to the file's folder (move the data or the splits).
    """
    folder = os.path.dirname(os.path.abspath(path))
    lines = []
    for r in records:
        clip = os.path.abspath(r.path)
        if any(c.isspace() for c in clip):
            clip = os.path.relpath(clip, folder)
        if any(c.isspace() for c in clip):
            raise ValueError(f"{r.path!r} holds a space, which the annotation format (FRAME_FOLDER NUM_FRAMES LABEL) "
                             f"cannot hold: move the dataset, or write the splits next to it so that paths relative "
                             f"to them have no spaces")
        lines.append(f"{clip} {r.num_frames} {r.label}\n")

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.writelines(lines)
    atomic_write(path, write)


def _split_lines(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: ROOT must be the {what} directory of its official release")
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line.split()


def ferv39k_records(root: str, split: str) -> List[ClipRecord]:
    """FERV39k's one split (``train`` or ``test``), labels in clipdfer's FERV39k order."""
    path = os.path.join(root, "4_setups", "All_scenes", f"{split}_All.csv")
    records = []
    for n, parts in _split_lines(path, "FERV39k"):
        if len(parts) != 2 or parts[1] not in _FERV39K_WORDS:
            if n == 1:
                continue  # a header line
            raise ValueError(f"{path}:{n}: expected '<Scene>/<Emotion>/<id> <Emotion>', got {' '.join(parts)!r}")
        folder = os.path.join(root, "2_ClipsforFaceCrop", parts[0])
        records.append(ClipRecord(folder, len(list_frames(folder)),
                                  FERV39K_CLASSES.index(_FERV39K_WORDS[parts[1]])))
    return records


def mafw_records(root: str, fold: int, split: str, frames: str = "data/frames") -> List[ClipRecord]:
    """One MAFW fold and split, labels in clipdfer's MAFW order. ``frames``: folder of per-clip frame folders under
    ``root``, or ``data/clips`` to read the videos."""
    path = os.path.join(root, "Train & Test Set", "single", "no_caption", f"set_{fold}", f"{split}.txt")
    records = []
    for n, parts in _split_lines(path, "MAFW"):
        if len(parts) != 2 or parts[1] not in MAFW_CLASSES:
            raise ValueError(f"{path}:{n}: expected '<clip>.mp4 <emotion>' with an emotion of {list(MAFW_CLASSES)}, "
                             f"got {' '.join(parts)!r}")
        clip = parts[0]
        if frames.rstrip("/").endswith("clips"):
            target = os.path.join(root, frames, clip)
            count = count_video_frames(target)
        else:
            target = os.path.join(root, frames, os.path.splitext(clip)[0])
            count = len(list_frames(target))
        records.append(ClipRecord(target, count, MAFW_CLASSES.index(parts[1])))
    return records


def prepare(dataset: str, root: str, out_dir: str, folds=(1, 2, 3, 4, 5), frames: str = "data/frames") -> List[str]:
    """Write ``out_dir/set_{fold}/{train,test}.txt`` (FERV39k: ``out_dir/{train,test}.txt``); returns the dirs."""
    def write(fold_dir, get):
        os.makedirs(fold_dir, exist_ok=True)
        for split in ("train", "test"):
            write_annotations(get(split), os.path.join(fold_dir, f"{split}.txt"))
        return fold_dir

    if dataset == "dfew":
        return [write(os.path.join(out_dir, f"set_{k}"), lambda s, k=k: dfew_records(root, k, s)) for k in folds]
    if dataset == "mafw":
        return [write(os.path.join(out_dir, f"set_{k}"), lambda s, k=k: mafw_records(root, k, s, frames))
                for k in folds]
    if dataset == "ferv39k":
        return [write(out_dir, lambda s: ferv39k_records(root, s))]
    raise ValueError(f"dataset={dataset!r}: expected dfew, ferv39k or mafw")
