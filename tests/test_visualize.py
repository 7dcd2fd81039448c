"""Pictures of predictions: the probability plot (without pyplot, leaving the caller's backend alone) and the annotated
video (each frame at its source time)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clipdfer.visualize import VideoAnnotator, face_colour, plot_prediction

CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
TESTS = os.path.dirname(os.path.abspath(__file__))


def stand_in_prediction(faces: int = 2, as_dicts: bool = False, notice: str = ""):
    """What plot_prediction reads of a prediction: faces with attributes (as clipdfer.predict's dataclasses) or, with
    ``as_dicts``, as dicts (their JSON form)."""
    make = dict if as_dicts else SimpleNamespace
    out = []
    for k in range(1, faces + 1):
        windows = []
        for w in range(6):
            p = np.roll(np.linspace(0.4, 0.02, len(CLASSES)), (k + w) % len(CLASSES))
            windows.append(make(start=0.5 * w, end=0.5 * w + 1.0, probs=dict(zip(CLASSES, (p / p.sum()).tolist()))))
        out.append(make(id=k, start=0.0, end=3.5, windows=windows, top_k=[(CLASSES[k], 0.3), (CLASSES[0], 0.2)]))
    return SimpleNamespace(faces=out, class_names=CLASSES, notice=notice)


def _plot_height(faces: int, dpi: int = 110) -> int:
    return int(round((2.6 * faces + 0.6) * dpi))  # plot_prediction's figure: 2.6 in per panel + 0.6 in


def test_plot_has_a_panel_per_face_from_dataclasses_or_dicts(tmp_path):
    pytest.importorskip("matplotlib")
    for faces in (1, 3):
        path = str(tmp_path / f"{faces}.png")
        assert plot_prediction(stand_in_prediction(faces, notice="random weights"), path) == path
        with Image.open(path) as im:
            assert im.size == (1100, _plot_height(faces))
    plot_prediction(stand_in_prediction(2), str(tmp_path / "attrs.png"), max_classes=3)
    plot_prediction(stand_in_prediction(2, as_dicts=True), str(tmp_path / "dicts.png"), max_classes=3)
    with Image.open(tmp_path / "attrs.png") as a, Image.open(tmp_path / "dicts.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    plot_prediction(stand_in_prediction(1), str(tmp_path / "p.svg"))
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="no faces with windows"):
        plot_prediction(SimpleNamespace(faces=[], class_names=CLASSES, notice=""), str(tmp_path / "none.png"))


def test_plot_leaves_the_backend_alone_and_never_imports_pyplot(tmp_path):
    """In a fresh interpreter, so that no other test's imports count."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "faces.png"
    code = ("import sys, matplotlib\n"
            "matplotlib.use('pdf')\n"
            "from test_visualize import stand_in_prediction\n"
            "from clipdfer.visualize import plot_prediction\n"
            f"plot_prediction(stand_in_prediction(2), {str(path)!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
            "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend()\n")
    path_env = os.pathsep.join([TESTS, os.path.dirname(TESTS), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path_env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1100, _plot_height(2))


def _sampled_times(seconds: float = 3.0, source_fps: float = 25.0, fps: float = 8.0, offset: float = 0.0):
    """The times of the frames taken at ``fps`` from a ``source_fps`` video: the source frame nearest each 1/fps."""
    picked = sorted({int(k * source_fps / fps + 0.5) for k in range(int(seconds * fps))})
    return [offset + j / source_fps for j in picked]


def _write(path, times, fps):
    """Grey frames at ``times``, face 1 with a box and a label, face 2 with a label only."""
    with VideoAnnotator(str(path), fps=fps) as annotator:
        for i, t in enumerate(times):
            frame = np.full((240, 320, 3), 90, dtype=np.uint8)
            annotator.write(i, t, frame, [(1, (20.0, 60.0, 100.0, 150.0), ("happy", 0.9)), (2, None, None)])
    return annotator


def _read(path):
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        return stream.codec_context.name, float(stream.duration * stream.time_base), frames


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("fps", [8.0, None])
def test_annotated_video_keeps_every_frame_at_its_source_time(tmp_path, monkeypatch, codec, fps):
    av = pytest.importorskip("av")
    if codec not in av.codecs_available:
        pytest.skip(f"the FFmpeg of this PyAV has no {codec}")
    monkeypatch.setattr(VideoAnnotator, "CODECS", (codec,))
    times = _sampled_times(offset=60.0)  # a run with --start 60
    assert np.allclose(np.diff(times)[:4], [0.12, 0.12, 0.12, 0.16])  # irregular: 8 of 25 frames a second
    annotator = _write(tmp_path / "a.mp4", times, fps)
    assert annotator.start == 60.0
    name, duration, frames = _read(tmp_path / "a.mp4")
    assert name == {"libx264": "h264"}.get(codec, codec) and len(frames) == len(times) == 24
    got = np.array([t for t, _ in frames])
    assert np.abs(got - (np.array(times) - times[0])).max() < 1e-3, got  # shifted to start at 0
    last = 1 / fps if fps else times[-1] - times[-2]  # the last frame lasts 1/fps, or as long as the one before
    assert abs(duration - (times[-1] - times[0] + last)) < 1e-3, duration
    for _, image in frames[::8]:  # each face's colour: its box and label; no box for face 2, only its label
        for face_id in (1, 2):
            near = (np.abs(image.astype(int) - np.array(face_colour(face_id))).sum(-1) < 60).sum()
            assert near > 100, (face_id, near)


def test_annotated_video_times_always_increase(tmp_path):
    av = pytest.importorskip("av")
    with VideoAnnotator(str(tmp_path / "b.mp4"), fps=10) as annotator:
        for i, t in enumerate([5.0, 5.0002, 5.0002, 4.9, 5.1]):  # the same millisecond twice, a step back
            annotator.write(i, t, np.zeros((64, 64, 3), dtype=np.uint8), [])
    with av.open(str(tmp_path / "b.mp4")) as container:
        got = [f.time for f in container.decode(video=0)]
    assert np.allclose(got, [0.0, 0.001, 0.002, 0.003, 0.1], atol=1e-6), got
    with pytest.raises(ValueError, match="fps=0"):
        VideoAnnotator(str(tmp_path / "c.mp4"), fps=0)
    VideoAnnotator(str(tmp_path / "never.mp4")).close()  # no frame: no file
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 3)])
def test_annotated_video_of_tiny_and_odd_frames(tmp_path, size):
    from clipdfer.data.io import read_video
    path = str(tmp_path / "tiny.mp4")
    with VideoAnnotator(path) as annotator:
        for i in range(3):
            annotator.write(i, i / 8, np.full((*size, 3), 200, np.uint8), [(1, None, ("happiness", 0.9))])
    h, w = size
    assert read_video(path).shape == (3, 3, max(2, h - h % 2), max(2, w - w % 2))  # it was "tuple index out of range"
