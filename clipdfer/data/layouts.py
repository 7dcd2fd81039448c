"""Official dataset layouts -> clipdfer annotation files (``FRAME_FOLDER NUM_FRAMES LABEL``, labels 0-based).

DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv`` with columns ``video_name`` and ``label``
(1-based, in the order happiness, sadness, neutral, anger, surprise, disgust, fear), face frames under
``Clip/clip_224x224/<video_name as 5 digits>/``.
"""

import csv
import os
from typing import List

from .datasets import ClipRecord
from .io import list_frames

__all__ = ["dfew_records", "write_annotations", "prepare_dfew"]


def dfew_records(root: str, fold: int, split: str) -> List[ClipRecord]:
    """The clips of one DFEW fold and split (``train`` or ``test``), with their frame counts read from disk."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    csv_path = os.path.join(root, "EmoLabel_DataSplit", f"{split}(single-labeled)", f"set_{fold}.csv")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path!r} not found: ROOT must be the DFEW directory that holds "
                                f"EmoLabel_DataSplit/ and Clip/clip_224x224/")
    records = []
    with open(csv_path, newline="") as f:
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
    """Write records as an annotation file (absolute paths), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            if " " in r.path:
                raise ValueError(f"{r.path!r} contains a space, which the annotation format cannot hold")
            f.write(f"{os.path.abspath(r.path)} {r.num_frames} {r.label}\n")
    os.replace(tmp, path)


def prepare_dfew(root: str, out_dir: str, folds=(1, 2, 3, 4, 5)) -> List[str]:
    """Write ``out_dir/set_{fold}/{train,test}.txt`` for DFEW's folds; returns the fold directories."""
    made = []
    for fold in folds:
        fold_dir = os.path.join(out_dir, f"set_{fold}")
        os.makedirs(fold_dir, exist_ok=True)
        for split in ("train", "test"):
            write_annotations(dfew_records(root, fold, split), os.path.join(fold_dir, f"{split}.txt"))
        made.append(fold_dir)
    return made
