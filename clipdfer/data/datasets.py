"""Datasets of clips: annotation files in DFER-CLIP's format (:class:`ClipDataset`), a folder per class
(:class:`ClipFolder`), synthetic clips."""

import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, _pil_filter, list_frames, natural_key, read_frames, read_video
from .sampling import sample_indices

__all__ = ["ClipRecord", "read_annotations", "ClipDataset", "ClipFolder", "find_classes", "SyntheticClips"]


@dataclass(frozen=True)
class ClipRecord:
    """One clip: a folder of frames or a video file, its frame count (None: not checked when read) and its label."""
    path: str
    num_frames: Optional[int]
    label: int


def read_annotations(path: str, root: Optional[str] = None, num_classes: Optional[int] = None) -> List[ClipRecord]:
    """Parse ``FRAME_FOLDER NUM_FRAMES LABEL`` lines (DFER-CLIP's format; labels 0-based).

    Args:
        path: the annotation file.
        root: directory that relative clip paths are under (default: the file's directory).
        num_classes: check every label is below it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    root = root if root is not None else os.path.dirname(os.path.abspath(path))
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
                raise ValueError(f"{path}:{n}: expected 'FRAME_FOLDER NUM_FRAMES LABEL', got {line.strip()!r}")
            label = int(parts[2])
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise ValueError(f"{path}:{n}: label {label} is outside 0..{(num_classes or 1) - 1}; labels are "
                                 f"0-based indices into the model's class order")
            records.append(ClipRecord(os.path.normpath(os.path.join(root, parts[0])), int(parts[1]), label))
    if not records:
        raise ValueError(f"annotation file {path!r} lists no clips")
    return records


class ClipDataset(Dataset):
    """Clips listed in an annotation file: (T, 3, H, W) float tensors and labels.

    Each clip is a folder of frames (natural order), a video file, or an animated image (GIF, WebP, APNG). The frame
    count in the annotation must match what is on disk: a mismatch usually means the wrong folder or an incomplete
    copy, and is an error.

    Args:
        records: from :func:`read_annotations`.
        num_frames: T.
        sampling: ``segment``, ``uniform`` or ``single`` (the pretrained cfg's).
        transform: from :func:`clipdfer.data.transforms.build_transform`.
        train: random segment offsets (else the middle frame of each segment).
        seed: base seed of the training offsets (per index, and epoch via :meth:`set_epoch`).
        frame_size: (H, W) in pixels every frame is resized to as it is read (as DFER-CLIP's loader); None: see
            :func:`~clipdfer.data.io.read_frames`.
        interpolation: of that resize, one of :data:`~clipdfer.data.io.INTERPOLATIONS`.

    Raises:
        ValueError: ``interpolation`` is unknown; when read, a clip whose frame count differs from the annotation's, and
            what :func:`~clipdfer.data.io.read_frames` and :func:`~clipdfer.data.io.read_video` raise.
    """

    def __init__(self, records: Sequence[ClipRecord], num_frames: int, sampling: str = "segment",
                 transform: Optional[Callable] = None, train: bool = False, seed: int = 0,
                 frame_size: Optional[Tuple[int, int]] = None, interpolation: str = "bilinear"):
        _pil_filter(interpolation)
        self.frame_size = (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        self.interpolation = interpolation
        self.records = list(records)
        self.num_frames = num_frames
        self.sampling = sampling
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> List[int]:
        return [r.label for r in self.records]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        record = self.records[index]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        if os.path.isfile(record.path):  # a video file, or an animated image (GIF, WebP, APNG)
            frames = read_video(record.path)
            found = frames.shape[0]
            source = "decodable frames"
        else:
            paths = list_frames(record.path)
            found = len(paths)
            source = "image files"
        if record.num_frames is not None and found != record.num_frames:
            raise ValueError(
                f"clip {record.path!r}: the annotation says {record.num_frames} frames but it has {found} {source}; "
                f"fix the annotation line or restore the clip's frames")
        idx = sample_indices(found, self.num_frames, self.sampling, self.train, g)
        if os.path.isfile(record.path):
            clip = frames[idx]
            if self.frame_size is not None and tuple(clip.shape[-2:]) != self.frame_size:
                clip = _resize_clip(clip, self.frame_size, self.interpolation)
        else:
            clip = read_frames(paths, idx, self.frame_size, self.interpolation)
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, record.label


SPLITS = ("train", "val", "test")


def find_classes(root: str) -> List[str]:
    """The class folders of ``root`` in sorted order (as torchvision's ``ImageFolder``); hidden folders are skipped.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it holds no class folder, or it holds the splits (``train/``, ``test/``) rather than classes.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root!r} is not a folder: give the folder that holds one folder per class "
                                f"(ROOT/<class>/<clip>.mp4 or ROOT/<class>/<clip>/<frames>)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root!r} holds no class folder: expected ROOT/<class>/<clip>.mp4 or "
                         f"ROOT/<class>/<clip>/<frames>, one folder per class")
    if "train" in classes and set(classes) <= set(SPLITS) and len(classes) > 1:
        raise ValueError(f"{root!r} holds the splits {', '.join(c + '/' for c in classes)}, not class folders: give "
                         f"one split, e.g. ClipFolder({os.path.join(root, 'train')!r}, model) (clipdfer train --data "
                         f"{root} reads each)")
    return classes


def data_dir_error(path: str, split: str, flag: str = "--data") -> Exception:
    """The error for a ``--data`` folder that has neither ``split/`` class folders nor ``split.txt``: the layouts
    accepted and what ``path`` holds (a split given for its parent, class folders given directly ...)."""
    expected = (f"expected {os.path.join(path, split, '<class>')}/<clips> (a folder per class: DIR/train/<class>, "
                f"DIR/test/<class>, optionally DIR/val/<class>) or {os.path.join(path, split + '.txt')} (an "
                f"annotation file: FRAME_FOLDER NUM_FRAMES LABEL)")
    if not os.path.exists(path):
        return FileNotFoundError(f"{flag} {path!r} does not exist: {expected}")
    if not os.path.isdir(path):
        return ValueError(f"{flag} {path!r} is a file, not a folder: {expected}")
    entries = sorted(n for n in os.listdir(path) if not n.startswith("."))
    dirs = [n for n in entries if os.path.isdir(os.path.join(path, n))]
    found = ", ".join(n + ("/" if n in dirs else "") for n in entries[:6]) + (" ..." if len(entries) > 6 else "")
    parent = os.path.dirname(os.path.normpath(path)) or "."
    if os.path.basename(os.path.normpath(path)) in SPLITS:
        hint = f"; {path!r} is a split itself: give the folder that holds it, {flag} {parent}"
    elif dirs and not set(dirs) & set(SPLITS):
        hint = (f"; if {', '.join(d + '/' for d in dirs[:3])} are classes, move them into {os.path.join(path, split)}/ "
                f"(and the test clips' class folders into {os.path.join(path, 'test')}/)")
    else:
        hint = ""
    return FileNotFoundError(f"{flag} {path!r} has no {split}/ folder nor {split}.txt: it holds "
                             f"{found or 'nothing'}; {expected}{hint}")


def _entries(folder: str) -> Tuple[List[Tuple[bool, str]], List[str]]:
    """``folder``'s sub-folders and video files in natural order, as (is a folder, path), and its image files' names;
    hidden ones skipped (macOS sidecars, .DS_Store); a broken symbolic link is an error naming it."""
    clips, images = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: natural_key(e.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not os.path.exists(entry.path):
            raise FileNotFoundError(f"{entry.path!r} is a broken symbolic link (to {os.readlink(entry.path)!r}): "
                                    f"point it at an existing clip or remove it")
        if entry.is_dir():
            clips.append((True, entry.path))
        elif entry.name.lower().endswith(VIDEO_EXTENSIONS):
            clips.append((False, entry.path))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(entry.name)
    return clips, images


def _class_clips(folder: str) -> List[str]:
    """A class folder's clips in natural order: its video files and its folders of frames, in sub-folders too (a
    folder holding images is one clip, a frame folder; a folder without images is walked, as ``ImageFolder`` does)."""
    entries, images = _entries(folder)
    if images:
        raise ValueError(f"class folder {folder!r} holds image files ({images[0]} ...): a clip is a video file or a "
                         f"folder of frames; put each clip's frames in a folder of its own ({folder}/clip1/0001.jpg)")
    clips = _walk_entries(entries, {os.path.realpath(folder)})
    if not clips:
        raise ValueError(f"class folder {folder!r} holds no clip: expected video files "
                         f"({', '.join(VIDEO_EXTENSIONS[:4])} ...) or folders of frames, in it or in its sub-folders")
    return clips


def _walk_entries(entries: List[Tuple[bool, str]], seen: set) -> List[str]:
    """The clips of ``entries``: each video, and each sub-folder's (itself where it holds images, a frame folder;
    else its own entries'); a folder reached twice (a symbolic-link loop) is skipped."""
    clips = []
    for is_dir, path in entries:
        if not is_dir:
            clips.append(path)
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        inner, images = _entries(path)
        videos = [p for d, p in inner if not d]
        if images and videos:
            raise ValueError(f"{path!r} holds both image files ({images[0]} ...) and videos "
                             f"({os.path.basename(videos[0])} ...): a folder of frames is one clip; move the videos "
                             f"out of it")
        if images:
            clips.append(path)
        elif inner:
            clips += _walk_entries(inner, seen)
        else:
            list_frames(path)  # names the empty folder now, not in the middle of an epoch
    return clips


class ClipFolder(ClipDataset):
    """Clips in a folder per class, as torchvision's ``ImageFolder``: ``root/<class>/<clip>.mp4`` or
    ``root/<class>/<clip>/<frames>``, prepared as a model's ``pretrained_cfg`` says; items are (T, 3, H, W) float
    clips and class indices.

    A clip is a video file (:data:`~clipdfer.data.io.VIDEO_EXTENSIONS`, decoded with PyAV) or a folder of frames (read
    in natural order), directly in the class folder or below it (``root/<class>/<actor>/<clip>.mp4``: sub-folders
    without images are walked, as ``ImageFolder`` does; a folder with images is one clip). Hidden files are skipped,
    other files ignored. Frame counts are not listed anywhere, so none is
    checked (:class:`ClipDataset`'s check of annotation files).

    Args:
        root: the folder of class folders.
        cfg: the model, or its :class:`~clipdfer.models.PretrainedCfg`: T (``num_frames``), ``frame_sampling``, the
            input size (every frame resized to it as it is read), ``interpolation``, ``mean`` and ``std``.
        train: random frames in each segment and the augmentations ``augment``; else the middle frames, no
            augmentation.
        classes: the class order (label i is ``classes[i]``); each must be a folder of ``root``, and every folder of
            ``root`` a class. Default: the folder names, sorted.
        augment: training augmentations (:func:`~clipdfer.data.transforms.build_transform`'s).
        transform: replaces the cfg's transform: (T, 3, H, W) uint8 -> the model's input.
        num_frames: T (default: the cfg's).
        seed: base seed of the training frames (per index and epoch, :meth:`set_epoch`).

    Attributes:
        classes: the class names in label order.
        class_to_idx: class name -> label.
        samples: (clip path, label) of every clip, class by class, in natural order.
        targets: the labels of ``samples``.

    Raises:
        FileNotFoundError: ``root`` is not a folder; a broken symbolic link.
        ValueError: no class folder; ``root`` holds the splits (``train/``, ``test/``: give one); a class folder
            without clips, or with image files directly in it; a folder with both frames and videos; ``classes`` that
            are not exactly ``root``'s folders.
    """

    def __init__(self, root: str, cfg, train: bool = False, classes: Optional[Sequence[str]] = None,
                 augment: Sequence[str] = ("crop", "flip"), transform: Optional[Callable] = None,
                 num_frames: Optional[int] = None, seed: int = 0):
        from .transforms import build_transform
        cfg = getattr(cfg, "pretrained_cfg", cfg)  # a model, or its cfg
        found = find_classes(root)
        if classes is None:
            classes = found
        else:
            classes = [str(c) for c in classes]
            missing, extra = [c for c in classes if c not in found], [c for c in found if c not in classes]
            if missing or extra or len(set(classes)) != len(classes):
                why = (f": no folder for {missing}" if missing else "") + (f": folders {extra} not in classes"
                                                                           if extra else "")
                raise ValueError(f"classes {classes} do not match the class folders of {root!r} ({found}){why}; give "
                                 f"each class once, a folder per class (move other folders out of the root)")
        self.root = root
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(path, i) for i, c in enumerate(self.classes) for path in _class_clips(os.path.join(root, c))]
        self.targets = [label for _, label in self.samples]
        records = [ClipRecord(path, None, label) for path, label in self.samples]
        super().__init__(records, num_frames or cfg.num_frames, cfg.frame_sampling,
                         transform or build_transform(cfg, train=train, augment=augment), train=train, seed=seed,
                         frame_size=tuple(cfg.input_size[-2:]), interpolation=cfg.interpolation)


def _resize_clip(clip: torch.Tensor, size: Tuple[int, int], interpolation: str) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, *size) uint8, frame by frame with PIL (as frame folders are resized)."""
    from PIL import Image
    resample = _pil_filter(interpolation)
    frames = [np.array(Image.fromarray(f.permute(1, 2, 0).numpy()).resize((size[1], size[0]), resample))
              for f in clip]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)


class SyntheticClips(Dataset):
    """Learnable synthetic clips for tests and demos: class c is a square of colour c moving along direction c.

    Position, colour jitter and background noise vary per sample; deterministic per (seed, index).

    Args:
        num_samples: dataset size.
        num_classes: C.
        num_frames: T.
        size: frame height and width.
        mean, std: normalisation applied to the [0, 1] frames.
        seed: base seed.
    """

    def __init__(self, num_samples: int = 64, num_classes: int = 7, num_frames: int = 8, size: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5), seed: int = 0):
        self.num_samples, self.num_classes, self.num_frames, self.size = num_samples, num_classes, num_frames, size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Nothing changes between epochs: each clip is a function of its index and the seed."""

    @property
    def labels(self) -> List[int]:
        return [i % self.num_classes for i in range(self.num_samples)]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        label = index % self.num_classes
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s, t = self.size, self.num_frames
        angle = 2 * math.pi * label / self.num_classes
        side = max(2, s // 3)
        start = torch.rand(2, generator=g) * (s - side) * 0.5 + (s - side) * 0.25
        step = (s - side) * 0.5 / max(1, t - 1)
        clip = torch.rand(t, 3, s, s, generator=g) * 0.1
        hue = label / self.num_classes
        colour = torch.tensor([abs(hue * 6 - 3) - 1, 2 - abs(hue * 6 - 2), 2 - abs(hue * 6 - 4)]).clamp(0, 1)
        colour = (0.25 + 0.75 * colour + 0.1 * (torch.rand(3, generator=g) - 0.5)).clamp(0, 1)
        for f in range(t):
            x = int((start[0] + math.cos(angle) * step * f).clamp(0, s - side))
            y = int((start[1] + math.sin(angle) * step * f).clamp(0, s - side))
            clip[f, :, y:y + side, x:x + side] = colour.view(3, 1, 1)
        return (clip - self.mean) / self.std, label
