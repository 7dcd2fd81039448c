"""Faces in video, on RGB (H, W, 3) uint8 frames: detection (YuNet or Haar), tracking with stable ids, shot cuts, crops
(docs/predict.md, "The face API on its own").
"""

from .crop import crop_face
from .detect import DETECTORS, Face, FaceDetector, HaarDetector, YuNetDetector, detect_faces, make_detector
from .track import FaceTracker, ShotCutDetector, Track, TrackBox, TrackerStep, iou, track_faces

__all__ = [
    "Face", "FaceDetector", "YuNetDetector", "HaarDetector", "make_detector", "detect_faces", "DETECTORS",
    "FaceTracker", "TrackBox", "Track", "TrackerStep", "ShotCutDetector", "track_faces", "iou", "crop_face",
]
