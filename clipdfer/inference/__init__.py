"""Predict expressions on your own videos: every face followed with a stable id and its own timeline.

    import clipdfer
    result = clipdfer.predict("interview.mp4")            # zero-shot CLIP by default
    print(result.top_k, result.overall)                   # the main face (the longest track): the clip's distribution
    for face in result.faces:                             # every face: id, span, sliding-window timeline, overall
        print(face.id, face.first_frame, face.last_frame, face.top_k)

Prediction is a pipeline, each stage in its own module, the data flowing one way:

    source -> frames with times      sources.py    files, folders, tensors, streams, cameras; upright, k/fps grid
           -> faces -> tracks        tracking.py   clipdfer.faces' tracker, in a background thread
           -> crops                  tracking.py   each final box cut and prepared as the model's cfg says
           -> windows                windows.py    T crops per face, one every stride; a track's crops end with it
           -> scores                 scoring.py    windows of every face batched, each frame encoded once
           -> timeline               results.py    WindowResult, FaceTimeline, Prediction, FailedSource
           -> outputs                outputs.py    text, JSON, CSV, annotated frames
    many sources                     batch.py      one bad source does not stop the others, resume, shards

:class:`Predictor` builds the stages once (predictor.py); ``Predictor(...).stream(frames)`` yields each face's windows
as they complete, ``run(source)`` returns a :class:`Prediction`, :class:`BatchRun` / :func:`predict_many` run many
sources. Memory is bounded by the window and the faces on screen, not by the video's length or the faces seen.
"""

from .batch import BatchItem, BatchRun, output_names, parse_shard, predict_many, process_share
from .predictor import DEFAULT_MODEL, NoFaceError, Predictor, predict
from .results import FaceTimeline, FailedSource, Prediction, WindowResult, result_from_dict
from .sources import Camera, expand_sources, is_live, iter_source, sample_clip_path, source_name

__all__ = ["predict", "predict_many", "Predictor", "Prediction", "FaceTimeline", "WindowResult", "FailedSource",
           "NoFaceError", "BatchRun", "BatchItem", "Camera", "sample_clip_path", "iter_source", "expand_sources",
           "is_live", "source_name", "output_names", "parse_shard", "process_share", "result_from_dict",
           "DEFAULT_MODEL"]
