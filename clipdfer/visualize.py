"""Pictures of predictions: each face's class probabilities over time (PNG), and the video with faces annotated."""

from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["plot_prediction", "VideoAnnotator", "face_colour"]

# distinct colours for face ids (Okabe-Ito, readable by colour-blind viewers)
_FACE_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                 (204, 121, 167)]


def face_colour(face_id: int) -> Tuple[int, int, int]:
    """The RGB colour of a face id in plots and annotated videos."""
    return _FACE_COLOURS[(face_id - 1) % len(_FACE_COLOURS)]


def _field(item, name: str):
    """A field of a prediction's face or window: a dataclass attribute or a JSON key."""
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def plot_prediction(prediction, path: str, max_classes: Optional[int] = None) -> str:
    """Draw each face's class probabilities over time, one panel per face, into an image file (PNG, SVG ...).

    A point per window at its middle time, a line per class. Needs matplotlib; draws on an Agg canvas, so pyplot's
    backend is left alone.

    Args:
        prediction: a :class:`~clipdfer.inference.Prediction` or its ``to_dict()``.
        path: the image file to write; its extension picks the format.
        max_classes: draw only the classes that reach the highest probability anywhere (default: all).

    Returns:
        ``path``.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: the prediction has no face with a window.
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'clipdfer[predict]' (or pip install matplotlib)") from e
    faces = [f for f in prediction.faces if _field(f, "windows")]
    if not faces:
        raise ValueError(f"the prediction has no faces with windows to plot ({len(prediction.faces)} face(s)): plot "
                         f"the prediction of a video in which a face was found")
    names = list(prediction.class_names)
    peak = {c: max(_field(w, "probs")[c] for f in faces for w in _field(f, "windows")) for c in names}
    shown = sorted(names, key=lambda c: -peak[c])[:max_classes] if max_classes else names
    cmap = matplotlib.colormaps["tab20" if len(names) > 10 else "tab10"]
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(names)}
    fig = Figure(figsize=(10, 2.6 * len(faces) + 0.6))
    FigureCanvasAgg(fig)  # the figure's own canvas: no pyplot, no global backend
    axes = fig.subplots(len(faces), 1, sharex=True, squeeze=False)
    for ax, face in zip(axes[:, 0], faces):
        windows = _field(face, "windows")
        t = [(_field(w, "start") + _field(w, "end")) / 2 for w in windows]
        for c in shown:
            ax.plot(t, [_field(w, "probs")[c] for w in windows], marker="o", markersize=3, linewidth=1.6,
                    color=colours[c], label=c)
        face_id = _field(face, "id")
        top, p = _field(face, "top_k")[0]
        ax.set_title(f"face {face_id}  ({_field(face, 'start'):.1f}-{_field(face, 'end'):.1f} s): {top} {p:.2f}",
                     loc="left", fontsize=10, color=tuple(v / 255 for v in face_colour(face_id)))
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    notice = getattr(prediction, "notice", None)
    if notice:
        fig.suptitle(notice, fontsize=8, color="firebrick")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


class VideoAnnotator:
    """Writes frames with each face's box, id and current top class to a video file (PyAV; H.264, else MPEG-4 Part 2).

    Each frame is written at its own time in milliseconds, shifted so that the video starts at 0 (:attr:`start`), and
    lasts until the next one (the last: ``1 / fps``); a time not after the previous one is moved 1 ms after it. Use a
    container that keeps frame times: ``.mp4``, ``.mkv`` or ``.mov``.

    Args:
        path: the video file to write.
        fps: the frames' nominal rate: the encoder's rate hint and the last frame's duration (default: one over the
            time between the first two frames, 24000/1001 for a 23.976 fps source, and the last interval).
        notice: a warning drawn across the bottom of every frame (the random-weights notice of
            :attr:`clipdfer.inference.Predictor.notice`); None: none.

    Attributes:
        start: the source time (s) of the first frame written (None before it).
    """

    TICKS = 1000  # time base of the written frames: 1 ms (MPEG-4 Part 2 allows up to 1/65535)
    CODECS = ("libx264", "mpeg4")  # the first one the FFmpeg of PyAV has

    def __init__(self, path: str, fps: Optional[float] = None, notice: Optional[str] = None):
        if fps is not None and not fps > 0:
            raise ValueError(f"fps={fps!r}: expected a frame rate > 0, or None to take it from the frames' times")
        self.path, self.fps, self.notice = path, fps, notice
        self.start: Optional[float] = None
        self._container = None
        self._stream = None
        self._font = None
        self._held: Optional[Tuple[int, np.ndarray]] = None  # (pts, RGB frame) waiting for the next one's time
        self._last_duration: Optional[int] = None
        self._durations: Dict[int, int] = {}  # pts -> duration (ticks) of the frames in the encoder
        self._times: List[float] = []  # the first two frames' times (s), for the rate

    def __enter__(self) -> "VideoAnnotator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, width: int, height: int) -> None:
        import av
        gap = self._times[1] - self._times[0] if len(self._times) == 2 else 0.0
        fps = self.fps or (1.0 / gap if gap > 0 else 8.0)
        rate = Fraction(fps).limit_denominator(1001)
        self._container = av.open(self.path, "w")
        for codec in self.CODECS:
            try:
                self._stream = self._container.add_stream(codec, rate=rate)
                break
            except (av.error.FFmpegError, ValueError):  # codec not in this FFmpeg build
                continue
        else:
            self._container.close()
            raise RuntimeError(f"the FFmpeg of PyAV {av.__version__} has none of {self.CODECS} to write "
                               f"{self.path}: install a PyAV wheel from PyPI (pip install --force-reinstall av)")
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        # frames in presentation order: the last one written is the last one shown, and lasts its own duration
        self._stream.codec_context.max_b_frames = 0
        tick = Fraction(1, self.TICKS)
        self._stream.codec_context.time_base = tick  # frames carry their own times; `rate` is only a hint
        self._stream.time_base = tick  # the muxer may refine it (MP4: 1/16000), keeping every time exact

    def write(self, index: int, t: float, frame: np.ndarray,
              faces: Sequence[Tuple[int, Optional[tuple], Optional[Tuple[str, float]]]]) -> None:
        """Draw ``faces`` on ``frame`` and write it at its time.

        Args:
            index: the frame's index among the frames given (unused: the time places the frame).
            t: the frame's time in the source, in seconds.
            frame: RGB (H, W, 3) uint8; odd sides lose their last row or column, a side of one pixel is doubled (YUV
                4:2:0).
            faces: [(face id, box (x0, y0, x1, y1) in pixels or None, (top class, probability) or None)].
        """
        from PIL import Image, ImageDraw, ImageFont
        if self.start is None:
            self.start = float(t)
            self._font = ImageFont.load_default()
        if len(self._times) < 2:
            self._times.append(float(t))
        h, w = frame.shape[:2]
        # yuv420p needs even sides: an odd side loses its last row or column, a side of 1 pixel is doubled
        frame = np.pad(frame, ((0, h == 1), (0, w == 1), (0, 0)), mode="edge")[:max(2, h - h % 2), :max(2, w - w % 2)]
        image = Image.fromarray(np.ascontiguousarray(frame))
        draw = ImageDraw.Draw(image)
        thickness = max(2, min(image.size) // 200)
        for face_id, box, top in faces:
            colour = face_colour(face_id)
            label = f"{face_id}: {top[0]} {top[1]:.2f}" if top else f"{face_id}: ..."
            x0, y0 = (box[0], box[1]) if box is not None else (4, 4)
            if box is not None:
                draw.rectangle([box[0], box[1], box[2], box[3]], outline=colour, width=thickness)
            tw, th = draw.textbbox((0, 0), label, font=self._font)[2:]
            ty = max(0, y0 - th - 4)
            draw.rectangle([x0, ty, x0 + tw + 6, ty + th + 4], fill=colour)
            draw.text((x0 + 3, ty + 2), label, fill=(0, 0, 0), font=self._font)
        if self.notice:
            self._draw_notice(draw, image.size)
        pts = int(round((float(t) - self.start) * self.TICKS))
        if self._held is not None:
            pts = max(pts, self._held[0] + 1)  # strictly increasing
            self._encode(*self._held, duration=pts - self._held[0])
        self._held = (pts, np.asarray(image))

    def _draw_notice(self, draw, size: Tuple[int, int]) -> None:
        """The notice's first clause (up to its first ';') in white on red across the frame's bottom, wrapped to the
        frame's width in at most two lines (the last one shortened with '...'), so that it hides little of the frame."""
        import textwrap
        char_w, line_h = draw.textbbox((0, 0), "M", font=self._font)[2:]
        lines = textwrap.wrap(self.notice.split(";")[0], width=max(8, (size[0] - 8) // max(1, char_w)),
                              max_lines=2, placeholder="...")
        top = max(0, size[1] - len(lines) * (line_h + 2) - 6)
        draw.rectangle([0, top, size[0], size[1]], fill=(200, 0, 0))
        for i, line in enumerate(lines):
            draw.text((4, top + 3 + i * (line_h + 2)), line, fill=(255, 255, 255), font=self._font)

    def _encode(self, pts: int, image: Optional[np.ndarray], duration: int = 0) -> None:
        """Encode one frame (None: flush the encoder) and mux what the encoder gives back."""
        import av
        if image is not None:
            if self._container is None:
                self._open(image.shape[1], image.shape[0])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, self._stream.codec_context.time_base
            self._durations[pts] = duration
            self._last_duration = duration
        for packet in self._stream.encode(frame if image is not None else None):
            packet.duration = self._durations.pop(packet.pts, packet.duration)  # the muxer's last frame needs it
            self._container.mux(packet)

    def close(self) -> None:
        """Write the last frame and finish the file (nothing is written if no frame was given)."""
        if self._held is not None:
            pts, image = self._held
            self._held = None
            last = int(round(self.TICKS / self.fps)) if self.fps else self._last_duration
            self._encode(pts, image, duration=max(1, last or int(round(self.TICKS / 8))))
        if self._container is None:
            return
        self._encode(0, None)
        self._container.close()
        self._container = None
