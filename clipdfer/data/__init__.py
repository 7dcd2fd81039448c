"""Data: label orders, class texts, reading clips, frame sampling, transforms, datasets."""

from .datasets import ClipDataset, ClipFolder, ClipRecord, SyntheticClips, find_classes, read_annotations
from .io import (count_video_frames, iter_frame_folder, iter_tensor_frames, iter_video_frames, list_frames,
                 natural_key, read_frames, read_video)
from .labels import DATASET_CLASSES, DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES, RAFDB_CLASSES, dataset_classes
from .sampling import FpsSampler, sample_indices, segment_indices, uniform_indices
from .transforms import build_transform

__all__ = [
    "ClipDataset", "ClipFolder", "ClipRecord", "SyntheticClips", "find_classes", "read_annotations",
    "count_video_frames", "list_frames", "natural_key", "read_frames",
    "read_video", "iter_video_frames", "iter_frame_folder", "iter_tensor_frames", "DATASET_CLASSES", "DFEW_CLASSES",
    "FERV39K_CLASSES", "MAFW_CLASSES", "RAFDB_CLASSES", "dataset_classes", "sample_indices", "segment_indices",
    "uniform_indices", "FpsSampler", "build_transform",
]
