"""Predict expressions on your own videos: every face followed with a stable id and its own timeline.

    import clipdfer
    result = clipdfer.predict("interview.mp4")       # DFER-CLIP fine-tuned on FERV39k by default
    print(result.top_k, result.overall)              # the main face (the longest track)
    for face in result.faces:                        # every face: id, span, sliding-window timeline, overall
        print(face.id, face.first_frame, face.last_frame, face.top_k)

:class:`Predictor` builds the pipeline's stages once; ``stream(frames)`` yields each face's windows as they complete,
``run(source)`` returns a :class:`Prediction`; :class:`BatchRun` and :func:`predict_many` run many sources.
docs/predict.md is the user's guide; docs/architecture.md maps the stages to their modules.
"""

import importlib
from typing import TYPE_CHECKING, Any, List

# public name -> the module that defines it; imported when first used, so that the settings (and ``clipdfer --help``)
# do not load torch
_EXPORTS = {
    **dict.fromkeys(("BatchItem", "BatchRun", "output_names", "parse_shard", "predict_many", "process_share"), "batch"),
    **dict.fromkeys(("DEFAULT_MODEL", "NoFaceError", "Predictor", "predict"), "predictor"),
    **dict.fromkeys(("FaceBox", "FaceTimeline", "FailedSource", "Prediction", "WindowResult", "load_results",
                     "result_from_dict"), "results"),
    **dict.fromkeys(("FaceSettings", "ReadSettings", "WindowSettings"), "settings"),
    **dict.fromkeys(("Camera", "SourceFrames", "expand_sources", "is_live", "iter_source", "sample_clip_path",
                     "source_name"), "sources"),
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .batch import BatchItem, BatchRun, output_names, parse_shard, predict_many, process_share
    from .predictor import DEFAULT_MODEL, NoFaceError, Predictor, predict
    from .results import FaceBox, FaceTimeline, FailedSource, Prediction, WindowResult, load_results, result_from_dict
    from .settings import FaceSettings, ReadSettings, WindowSettings
    from .sources import Camera, SourceFrames, expand_sources, is_live, iter_source, sample_clip_path, source_name


_SUBMODULES = ("batch", "outputs", "predictor", "results", "scoring", "settings", "sources", "tracking", "windows")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # clipdfer.inference.predictor after `import clipdfer.inference`, as before
        value = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
