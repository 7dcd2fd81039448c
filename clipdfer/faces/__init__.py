"""Faces in video: detection (YuNet or Haar), tracking with stable ids, shot cuts, crops.

    from clipdfer.faces import detect_faces, track_faces
    faces = detect_faces(frame)                 # [Face(box=(x0, y0, x1, y1), score), ...], largest first
    tracks = track_faces(frames)                # [Track(id, first_frame, last_frame, detections, boxes), ...]

Frames are RGB (H, W, 3) uint8 numpy arrays. See docs/predict.md.
"""

from .crop import crop_face
from .detect import DETECTORS, Face, FaceDetector, HaarDetector, YuNetDetector, detect_faces, make_detector
from .track import FaceTracker, ShotCutDetector, Track, TrackBox, TrackerStep, iou, track_faces

__all__ = [
    "Face", "FaceDetector", "YuNetDetector", "HaarDetector", "make_detector", "detect_faces", "DETECTORS",
    "FaceTracker", "TrackBox", "Track", "TrackerStep", "ShotCutDetector", "track_faces", "iou", "crop_face",
]
