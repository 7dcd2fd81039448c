"""Pictures of predictions: each face's class probabilities over time (PNG), and the video with faces annotated."""

from fractions import Fraction
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["plot_prediction", "VideoAnnotator", "face_colour"]

# distinct colours for face ids (Okabe-Ito, readable by colour-blind viewers)
_FACE_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                 (204, 121, 167)]


def face_colour(face_id: int) -> Tuple[int, int, int]:
    """The RGB colour of a face id in plots and annotated videos."""
    return _FACE_COLOURS[(face_id - 1) % len(_FACE_COLOURS)]


def plot_prediction(prediction, path: str, max_classes: Optional[int] = None) -> str:
    """Draw each face's class probabilities over time, one panel per face, and save it as an image (PNG, SVG ...).

    Every window is a point at its middle time; each class is one line, in the same colour in every panel; the
    panel's title names the face, its span and its overall top class. Needs matplotlib
    (``pip install "clipdfer[predict]"``).

    Args:
        prediction: what :func:`clipdfer.predict` returned.
        path: the image file to write.
        max_classes: draw only the classes that reach the highest probability anywhere (default: all).
    """
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'clipdfer[predict]' (or pip install matplotlib)") from e
    faces = prediction.faces
    if not faces:
        raise ValueError("the prediction has no faces to plot")
    names = list(prediction.class_names)
    peak = {c: max(w["probs"][c] for f in faces for w in f["windows"]) for c in names}
    shown = sorted(names, key=lambda c: -peak[c])[:max_classes] if max_classes else names
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(names)}
    fig, axes = plt.subplots(len(faces), 1, figsize=(10, 2.6 * len(faces) + 0.6), sharex=True, squeeze=False)
    for ax, face in zip(axes[:, 0], faces):
        t = [(w["start"] + w["end"]) / 2 for w in face["windows"]]
        for c in shown:
            ax.plot(t, [w["probs"][c] for w in face["windows"]], marker="o", markersize=3, linewidth=1.6,
                    color=colours[c], label=c)
        top, p = face["top_k"][0]
        ax.set_title(f"face {face['id']}  ({face['start']:.1f}-{face['end']:.1f} s): {top} {p:.2f}", loc="left",
                     fontsize=10, color=tuple(v / 255 for v in face_colour(face["id"])))
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if prediction.notice:
        fig.suptitle(prediction.notice, fontsize=8, color="firebrick")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class VideoAnnotator:
    """Writes frames with each face's box, id and current top class to a video file (PyAV; H.264 when the FFmpeg of
    the PyAV wheel has it, else MPEG-4 Part 2).

    Args:
        path: the video file to write (``.mp4``).
        fps: frame rate of the frames given (default 8).
    """

    def __init__(self, path: str, fps: Optional[float] = None):
        self.path, self.fps = path, fps or 8.0
        self._container = None
        self._stream = None
        self._font = None

    def _open(self, width: int, height: int) -> None:
        import av
        self._container = av.open(self.path, "w")
        rate = Fraction(self.fps).limit_denominator(1000)
        for codec in ("libx264", "mpeg4"):
            try:
                self._stream = self._container.add_stream(codec, rate=rate)
                break
            except (av.error.FFmpegError, ValueError):  # codec not in this FFmpeg build
                continue
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"

    def write(self, index: int, t: float, frame: np.ndarray,
              faces: Sequence[Tuple[int, Optional[tuple], Optional[Tuple[str, float]]]]) -> None:
        """Draw ``faces`` ([(id, box or None, (top class, probability) or None)]) on ``frame`` and write it."""
        import av
        from PIL import Image, ImageDraw, ImageFont
        h, w = frame.shape[:2]
        w2, h2 = w - w % 2, h - h % 2  # yuv420p needs even sides
        if self._container is None:
            self._open(w2, h2)
            self._font = ImageFont.load_default()
        image = Image.fromarray(np.ascontiguousarray(frame[:h2, :w2]))
        draw = ImageDraw.Draw(image)
        thickness = max(2, min(w2, h2) // 200)
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
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
