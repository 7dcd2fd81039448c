"""Reading videos as a player shows them: display matrices (container and bitstream), frames without timestamps,
sampling on the k / fps grid, decoder threads. Every video is made here with PyAV (no ffmpeg binary)."""

import fractions
import logging
import struct
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import av
except ImportError:  # the video extra: the tests that read or write videos skip, the sampler's tests run
    av = None
needs_av = pytest.mark.skipif(av is None, reason="needs PyAV: pip install 'clipdfer[video]'")

from clipdfer.data import io  # noqa: E402
from clipdfer.data.io import (apply_display_matrix, estimate_frames, iter_stream_frames,  # noqa: E402
                              iter_video_frames, read_video)
from clipdfer.data.sampling import FpsSampler  # noqa: E402
from videos import (joined, picture, tkhd_matrix_offset, with_display_matrix,  # noqa: E402
                    with_orientation_sei, write_video)


def close(a: np.ndarray, b: np.ndarray, tolerance: int = 2) -> bool:
    """Same shape and pixels, but for the rounding of RGB -> YUV -> RGB (and JPEG's loss, with a larger tolerance)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b).max()) <= tolerance


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(path, frames as decoded): 3 frames of :func:`picture`, moving, encoded without loss but for the colours'
    rounding."""
    path = tmp_path_factory.mktemp("clip") / "upright.mp4"
    write_video(path, [np.roll(picture(), 4 * i, axis=1) for i in range(3)])
    frames = [f for _, f in iter_video_frames(str(path))]
    assert close(frames[0], picture())
    return path, frames


# matrix (a, b, c, d) -> what a player shows (checked against ffmpeg's autorotation: ffmpeg -i f.mp4 -f rawvideo)
ORIENTATIONS = {
    "upright": ((1, 0, 0, 1), lambda x: x),
    "rotate=90": ((0, 1, -1, 0), lambda x: np.rot90(x, -1)),  # shown turned clockwise (ffmpeg's rotate=270 tag)
    "rotate=180": ((-1, 0, 0, -1), lambda x: np.rot90(x, 2)),
    "rotate=270": ((0, -1, 1, 0), lambda x: np.rot90(x, 1)),
    "hflip": ((-1, 0, 0, 1), lambda x: x[:, ::-1]),
    "vflip": ((1, 0, 0, -1), lambda x: x[::-1]),
    "transpose": ((0, 1, 1, 0), lambda x: x.swapaxes(0, 1)),
    "antitranspose": ((0, -1, -1, 0), lambda x: x[::-1, ::-1].swapaxes(0, 1)),
}


@needs_av
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_container_display_matrix_on_every_path(tmp_path, clip, name):
    path, upright = clip
    matrix, shown = ORIENTATIONS[name]
    rotated = tmp_path / f"{name}.mp4"
    with_display_matrix(path, rotated, *matrix)
    expected = [np.ascontiguousarray(shown(f)) for f in upright]
    for frames in ([f for _, f in iter_video_frames(str(rotated))],
                   [f for _, f in iter_stream_frames(str(rotated))],
                   [f.numpy() for f in read_video(str(rotated)).permute(0, 2, 3, 1).contiguous()]):
        assert len(frames) == 3
        for got, want in zip(frames, expected):
            assert got.shape == want.shape and np.array_equal(got, want), name
            assert got.flags["C_CONTIGUOUS"]


@needs_av
def test_a_phone_clip_stored_sideways_comes_out_upright(tmp_path):
    # what `ffmpeg -i in.mp4 -vf transpose=2 tmp.mp4; ffmpeg -i tmp.mp4 -c copy -metadata:s:v:0 rotate=270 out.mp4`
    # makes: the picture stored turned anticlockwise, with the matrix that turns it back (0 1 0; -1 0 0; 0 0 1)
    stored = tmp_path / "stored.mp4"
    write_video(stored, [np.rot90(picture(), 1)] * 2)
    phone = tmp_path / "phone.mp4"
    with_display_matrix(stored, phone, 0, 1, -1, 0)
    for _, frame in iter_video_frames(str(phone), fps=8, start=0.1):
        assert close(frame, picture())


SEI_CASES = [(0, ""), (90, ""), (180, ""), (270, ""), (0, "horizontal"), (90, "horizontal"), (0, "vertical"),
             (270, "vertical")]


@needs_av
@pytest.mark.parametrize("rotate,flip", SEI_CASES)
def test_bitstream_orientation_sei(tmp_path, clip, rotate, flip):
    path, upright = clip
    out = tmp_path / "sei.mp4"
    with_orientation_sei(path, out, rotate, flip)
    frames = [f for _, f in iter_video_frames(str(out))]
    assert len(frames) == 3  # the SEI comes with the first frame; it holds for the ones after it
    for got, frame in zip(frames, upright):
        # H.264's display orientation: the flip, then an anticlockwise rotation
        flipped = frame[:, ::-1] if flip == "horizontal" else frame[::-1] if flip == "vertical" else frame
        assert np.array_equal(got, np.rot90(flipped, rotate // 90))
    later = [f for _, f in iter_video_frames(str(out), start=0.2)]  # the frame with the SEI is decoded, not kept
    assert len(later) == 1 and np.array_equal(later[0], frames[2])


@needs_av
def test_orientation_sei_in_a_raw_h264_stream(tmp_path, clip):
    path, upright = clip
    raw = tmp_path / "camera.h264"
    with_orientation_sei(path, raw, 90, fmt="h264")
    notes = []
    got = list(iter_stream_frames(str(raw), notes=notes))
    assert [t for t, _ in got] == [0.0, 0.125, 0.25] and len(notes) == 1
    assert all(np.array_equal(f, np.rot90(u, 1)) for (_, f), u in zip(got, upright))


@needs_av
def test_a_matrix_that_is_not_a_quarter_turn_is_logged_once_and_left_alone(tmp_path, clip, caplog):
    path, upright = clip
    tilted = tmp_path / "tilted.mp4"
    data = bytearray(path.read_bytes())
    at = tkhd_matrix_offset(data)
    c, s = round(np.cos(np.pi / 6) * 65536), round(np.sin(np.pi / 6) * 65536)  # 30 degrees
    data[at:at + 36] = struct.pack(">9i", c, s, 0, -s, c, 0, 0, 0, 1 << 30)
    tilted.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="clipdfer.data.io"):
        frames = [f for _, f in iter_video_frames(str(tilted))]
    assert all(np.array_equal(f, u) for f, u in zip(frames, upright))
    warnings = [r.getMessage() for r in caplog.records if "not a multiple of 90" in r.getMessage()]
    assert len(warnings) == 1 and "tilted.mp4" in warnings[0]
    with pytest.raises(ValueError, match="not a rotation by a multiple of 90 degrees"):
        apply_display_matrix(upright[0], [c, s, 0, -s, c, 0, 0, 0, 1 << 30])


# ---------------------------------------------------------------------------------------------------- timestamps
@needs_av
def test_a_raw_h264_stream_is_timed_by_its_rate(tmp_path, caplog):
    raw = tmp_path / "raw.h264"  # what a Raspberry Pi camera writes: no container, no timestamps
    write_video(raw, [np.roll(picture(), i, axis=1) for i in range(24)], rate=8, fmt="h264", pix_fmt="yuv420p")
    with av.open(str(raw)) as container:  # the raw demuxer makes up 25 fps; the bitstream's timing says 8
        stream = container.streams.video[0]
        assert (stream.guessed_rate, stream.average_rate) == (8, 25)
    notes = []
    with caplog.at_level(logging.WARNING, logger="clipdfer.data.io"):
        times = [t for t, _ in iter_video_frames(str(raw), notes=notes)]
        assert [t for t, _ in iter_video_frames(str(raw), fps=4)] == [i / 4 for i in range(12)]
    assert times == [i / 8 for i in range(24)]
    assert notes == ["raw.h264 carries no timestamps: frame times are frame index / 8 fps (the stream's rate)"]
    assert sum("carries no timestamps" in r.getMessage() for r in caplog.records) == 1  # once per file
    stream_notes = []
    assert [t for t, _ in iter_stream_frames(str(raw), fps=8, notes=stream_notes)] == times
    assert stream_notes == notes
    assert [t for t, _ in iter_video_frames(str(raw), start=1.0, end=2.0)] == [i / 8 for i in range(8, 17)]
    assert estimate_frames(str(raw), 8) is None  # no frame count, no duration: unknown


@needs_av
@pytest.mark.parametrize("rate", [12, 13])
def test_a_raw_stream_at_a_rate_ffmpeg_guesses_double(tmp_path, rate):
    raw = write_video(tmp_path / "pi.h264", [picture() for _ in range(2 * rate)], rate=rate, fmt="h264")
    with av.open(raw) as container:  # guessed_rate says 24 for 12 fps, 26 for 13; the decoder's rate is right
        assert container.streams.video[0].guessed_rate == 2 * rate
    assert [t for t, _ in iter_video_frames(raw)] == pytest.approx([i / rate for i in range(2 * rate)])


@needs_av
def test_a_time_range_without_frames_says_so(tmp_path):
    path = write_video(tmp_path / "clip.mp4", [picture() for _ in range(24)], rate=8)
    with pytest.raises(ValueError, match=r"no decodable frames between 1.01 and 1.02 s"):
        list(iter_video_frames(path, start=1.01, end=1.02))


def test_frames_without_a_timestamp_continue_from_the_last_one():
    notes = []
    clock = io._Clock("cam.ts", SimpleNamespace(guessed_rate=10, average_rate=25, base_rate=20), notes)
    assert [round(clock(t), 9) for t in (3.0, 3.1, None, None, 3.5, None)] == [3.0, 3.1, 3.2, 3.3, 3.5, 3.6]
    assert notes == ["cam.ts: frame 2 and others carry no timestamp: each is timed 1/10 s after the frame before it "
                     "(10 fps, the stream's rate)"]
    notes = []
    clock = io._Clock("clip.h264", SimpleNamespace(guessed_rate=None, average_rate=None, base_rate=None), notes)
    assert [clock(None) for _ in range(3)] == [0.0, 0.04, 0.08]
    assert notes == ["clip.h264 carries no timestamps: frame times are frame index / 25 fps (assumed: the stream "
                     "gives no rate)"]


# ---------------------------------------------------------------------------------------------------- sampling
def _sampled(times, fps):
    sampler = FpsSampler(fps)
    return [t for t in times if sampler.take(t)]


@pytest.mark.parametrize("rate", [8, 10, 12.5, 24, 25, 30000 / 1001, 30, 50, 60, 120])
@pytest.mark.parametrize("fps", [1, 5, 8])
def test_sampler_keeps_fps_frames_per_second(rate, fps):
    rng = np.random.default_rng(0)
    for t0, wobble in ((0.0, 0.0), (3.7, 0.0), (0.0, 0.001), (12.3, 0.001)):
        times = t0 + np.arange(int(rate * 10)) / rate + rng.uniform(-wobble, wobble, int(rate * 10))
        kept = _sampled(times.tolist(), fps)
        span = times[-1] - times[0]
        assert abs(len(kept) - (span * fps + 1)) <= 1, (rate, fps, t0, wobble, len(kept))
        gaps = np.diff(kept)  # never denser than fps, never a grid point skipped
        assert gaps.min() >= 1 / fps - 1 / rate - 2 * wobble - 1e-9 and gaps.max() <= 1 / fps + 1 / rate + 2 * wobble
        assert set(kept) <= set(times.tolist())  # the frames' own times


def test_sampler_on_slow_sources_gaps_and_without_fps():
    slow = [i / 5 for i in range(50)]
    assert _sampled(slow, 8) == slow  # slower than fps: every frame
    assert _sampled(slow, None) == _sampled(slow, 0) == slow
    # 25 fps with the source silent for 0.3 s and 0.7 s: fps per second of each stretch (+-1 per stretch)
    stretches = [(0.0, 2.0), (2.3, 3.0), (3.7, 6.0)]
    times = [a + i / 25 for a, b in stretches for i in range(int(round((b - a) * 25)))]
    kept = _sampled(times, 8)
    for a, b in stretches:
        n = sum(a - 1e-9 <= t < b for t in kept)
        assert abs(n - (b - a - 1 / 25) * 8 - 1) <= 1, (a, b, n)
    assert min(np.diff(kept)) >= 1 / 8 - 1 / 25 - 1e-9
    assert _sampled([i / 25 for i in range(13)], 8) == [0.0, 0.12, 0.24, 0.36, 0.48]  # the nearest to k / 8
    with pytest.raises(ValueError, match="fps=-8"):
        FpsSampler(-8)


@needs_av
@pytest.mark.parametrize("rate", [8, 10, 24, 25, fractions.Fraction(30000, 1001), 30, 60])
def test_video_files_keep_fps_frames_per_second(tmp_path, rate):
    path = tmp_path / "clip.mp4"
    n = int(3 * rate)
    write_video(path, [np.full((16, 16, 3), 3 * i % 256, np.uint8) for i in range(n)], rate, "mpeg4", "mp4",
                "yuv420p")
    every = [t for t, _ in iter_video_frames(str(path))]
    assert len(every) == n
    kept = [t for t, _ in iter_video_frames(str(path), fps=8)]
    assert abs(len(kept) - ((every[-1] - every[0]) * 8 + 1)) <= 1
    assert set(kept) <= set(every)
    assert estimate_frames(str(path), 8) == len(kept)
    assert estimate_frames(str(path), None) == n
    part = [t for t, _ in iter_video_frames(str(path), fps=8, start=0.5, end=2.0)]
    assert estimate_frames(str(path), 8, 0.5, 2.0) == len(part) and 0.5 - 1e-6 <= part[0] and part[-1] <= 2.0 + 1e-6
    assert [t for t, _ in iter_stream_frames(str(path), fps=8)] == kept  # the stream path samples alike
    if rate in (25, 30):  # and the camera path (OpenCV, here on a file with its own times)
        pytest.importorskip("cv2")
        camera = [t for t, _ in io.iter_camera_frames(str(path), fps=8)]
        assert np.allclose(camera, kept, atol=1e-3)


@needs_av
def test_variable_rate_files(tmp_path):
    rng = np.random.default_rng(1)
    wobbly = np.round(np.arange(90) / 30 + rng.choice([-0.001, 0.0, 0.001], 90), 3)  # 30 fps, +-1 ms
    wobbly[0] = 0.0
    # 1 s at 30 fps, a 0.5 s hole, 1 s at 20 fps, a 0.5 s hole, 0.75 s at 60 fps
    stretches = [np.arange(30) / 30, 1.5 + np.arange(20) / 20, 3.0 + np.arange(45) / 60]
    gappy = np.round(np.concatenate(stretches), 3)
    for name, times, parts in (("wobbly", wobbly, [wobbly]), ("gappy", gappy, stretches)):
        path = tmp_path / f"{name}.mp4"
        write_video(path, [np.full((16, 16, 3), i, np.uint8) for i in range(len(times))], 30, "mpeg4", "mp4",
                    "yuv420p", times=times.tolist())
        every = [t for t, _ in iter_video_frames(str(path))]
        assert np.allclose(every, times, atol=1e-9)  # the file holds the times we meant
        kept = np.array([t for t, _ in iter_video_frames(str(path), fps=8)])
        assert set(kept.tolist()) <= set(every)
        for part in parts:  # fps per second of each stretch of frames, +-1
            n = ((kept >= part[0] - 1e-3) & (kept <= part[-1] + 1e-3)).sum()
            assert abs(n - ((part[-1] - part[0]) * 8 + 1)) <= 1, (name, part[0], n)
        assert np.diff(kept).min() >= 1 / 8 - 1 / 20 - 2e-3  # never denser than 8 per second


# ---------------------------------------------------------------------------------------------------- threads
@needs_av
def test_decoder_threads_change_nothing(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(20)]
    write_video(path, frames, 25, "libx264", pix_fmt="yuv420p", options={"preset": "medium", "bf": "3"})
    with av.open(str(path)) as container:  # B-frames: decoding reorders, as threads must too
        assert any(p.pts != p.dts for p in container.demux(video=0) if p.size)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # no threads (PyAV's default is slice threads)
        plain = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    types = []
    stream_of = io._video_stream
    monkeypatch.setattr(io, "_video_stream", lambda c, *a: types.append(stream_of(c, *a).thread_type.name) or
                        c.streams.video[0])
    threaded = list(iter_video_frames(str(path)))
    assert types == ["AUTO"]  # frame and slice threads
    assert [t for t, _ in threaded] == [t for t, _ in plain]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(threaded, plain))


# ---------------------------------------------------------------------------------------- files as users have them
def _mjpeg_with_exif(path, count=6, orientation=6):
    """An MJPEG file whose JPEG frames carry an EXIF orientation (what some cameras write; FFmpeg 8 exports the EXIF
    as a side data type older PyAV does not know)."""
    import io as _io

    from PIL import Image
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuvj420p"
        for i in range(count):
            image = Image.fromarray(picture())
            exif = image.getexif()
            exif[0x0112] = orientation
            data = _io.BytesIO()
            image.save(data, format="JPEG", quality=95, exif=exif)
            packet = av.Packet(data.getvalue())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, fractions.Fraction(1, 8)
            container.mux(packet)
    return str(path)


@needs_av
def test_jpeg_frames_with_exif_are_read_upright(tmp_path):
    frames = read_video(_mjpeg_with_exif(tmp_path / "camera.avi"))  # it was "31 is not a valid Type"
    assert frames.shape == (6, 3, 48, 32)  # EXIF 6: shown turned a quarter clockwise
    assert close(frames[0].permute(1, 2, 0).numpy(), np.rot90(picture(), -1), tolerance=40)


@needs_av
def test_times_count_from_the_start_of_the_timeline(tmp_path):
    frames = [picture() for _ in range(24)]
    for name in ("cam.ts", "cut.mkv"):  # a camera's MPEG-TS starting at 1.65 s, a cut starting at 5 s
        offset = 1.65 if name.endswith(".ts") else 5.0
        path = write_video(tmp_path / name, frames, rate=8, times=[offset + i / 8 for i in range(24)])
        notes = []
        times = [t for t, _ in iter_video_frames(path, notes=notes)]
        assert times == pytest.approx([i / 8 for i in range(24)], abs=2e-3) and notes == [], name
        kept = [t for t, _ in iter_video_frames(path, start=1.0, end=1.5)]  # seeking counts from the start too
        assert kept == pytest.approx([1.0, 1.125, 1.25, 1.375, 1.5], abs=2e-3)


def _flat(value):
    return np.full((16, 16, 3), value, np.uint8)


@needs_av
def test_mpeg_ts_files_joined_end_to_end_are_read_on_one_timeline(tmp_path):
    # cat a.ts b.ts c.ts: 2 s and 1.6 s at 25 fps whose times both start at 0, then 0.4 s whose times start at 100 s
    # (ffprobe -show_frames: pts_time 1.96, 0.00 at the first join; 1.56, 100.00 at the second; ffmpeg -vf fps=8
    # reads 32 frames of it). It was 20 frames at fps=8 (the second part's times were served already), times going
    # 1.96 -> 0.0 with every frame, "no decodable frames" between 2.4 and 2.6 s, and no word
    parts = [write_video(tmp_path / "a.ts", [_flat(2 * i) for i in range(50)], rate=25),
             write_video(tmp_path / "b.ts", [_flat(100 + 2 * i) for i in range(40)], rate=25),
             write_video(tmp_path / "c.ts", [_flat(200 + 5 * i) for i in range(10)], rate=25,
                         times=[100 + i / 25 for i in range(10)])]  # a jump forward far beyond 10 s
    path = joined(tmp_path / "joined.ts", *parts)
    notes = []
    every = list(iter_video_frames(path, notes=notes))
    assert [t for t, _ in every] == pytest.approx([i / 25 for i in range(100)], abs=1e-6)  # one frame after another
    values = [2 * i for i in range(50)] + [100 + 2 * i for i in range(40)] + [200 + 5 * i for i in range(10)]
    assert all(abs(int(f.mean()) - v) <= 2 for (_, f), v in zip(every, values))  # the frames of each part, in order
    assert notes == ["joined.ts: its timestamps jump 2 time(s) (at 2.00 s, 1.96 s -> 0.00 s; at 3.60 s, 1.56 s -> "
                     "100.00 s), as in files joined end to end (cat a.ts b.ts) or a recorder that restarted its "
                     "clock: each part is read after the one before it, one frame interval after its last frame, on "
                     "one increasing timeline"]
    kept = [t for t, _ in iter_video_frames(path, fps=8)]
    assert len(kept) == 32 and kept == pytest.approx(_sampled([i / 25 for i in range(100)], 8), abs=1e-6)
    assert [t for t, _ in iter_stream_frames(path, fps=8)] == pytest.approx(kept, abs=1e-6)  # a live TS alike
    part = list(iter_video_frames(path, start=2.4, end=2.6))  # in the second part: no seek to its own 2.4 s
    assert [t for t, _ in part] == pytest.approx([2.4, 2.44, 2.48, 2.52, 2.56, 2.6], abs=1e-6)
    assert [int(round(f.mean())) for _, f in part] == pytest.approx([120, 122, 124, 126, 128, 130], abs=2)


@needs_av
def test_a_time_range_of_joined_ts_files_with_b_frames_is_found_without_decoding_the_rest(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x264 = {"preset": "medium", "bf": "3", "g": "12"}  # B-frames: decoding order is not display order
    parts = [write_video(tmp_path / f"{k}.ts", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)],
                         rate=25, pix_fmt="yuv420p", options=x264) for k, n in (("a", 60), ("b", 50))]
    path = joined(tmp_path / "joined.ts", *parts)
    with av.open(path) as container:
        assert any(p.pts != p.dts for p in container.demux(video=0) if p.size)
    every = list(iter_video_frames(path))
    assert [t for t, _ in every] == pytest.approx([i / 25 for i in range(110)], abs=1e-6)
    given = []
    packets_from = io._packets_from
    monkeypatch.setattr(io, "_packets_from", lambda *a: (given.append(p) or p for p in packets_from(*a)))
    for start, end in ((0.5, 0.9), (2.3, 2.9), (2.4, None), (4.3, 4.36), (2.0, 2.0)):
        given.clear()
        notes = []
        part = list(iter_video_frames(path, start=start, end=end, notes=notes))
        assert notes == ([] if end is not None and end < 2.4 else [  # the join, as the frames show it
            "joined.ts: its timestamps jump 1 time(s) (at 2.40 s, 2.36 s -> 0.00 s), as in files joined end to end "
            "(cat a.ts b.ts) or a recorder that restarted its clock: each part is read after the one before it, one "
            "frame interval after its last frame, on one increasing timeline"]), (start, end, notes)
        want = [(t, f) for t, f in every if start - 1e-6 <= t <= (end if end is not None else 9) + 1e-6]
        assert [t for t, _ in part] == pytest.approx([t for t, _ in want], abs=1e-6), (start, end)
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(part, want)), (start, end)
        assert len([p for p in given if p.size]) <= 110 - int(start * 25) + 12  # from the key frame before start


@needs_av
def test_a_ts_file_across_the_33_bit_wrap_is_whole_and_says_so(tmp_path):
    wrap = 2 ** 33 / 90000  # 95443.72 s: the 90 kHz clock of MPEG-TS wraps to 0 there
    # ffprobe -correct_ts_overflow 0 -show_frames: pts 8589923370 (95443.59 s) then 28 (0.0003 s); FFmpeg unwraps it
    # and says start_time=-0.999689, duration=3.000000. It was called "truncated" (2.88 s + the start, -1.0 s, is
    # short of 3.0 s)
    path = write_video(tmp_path / "wrap.ts", [_flat(10 * i) for i in range(24)], rate=8,
                       times=[wrap - 1.0 + i / 8 for i in range(24)])
    notes = []
    assert [t for t, _ in iter_video_frames(path, notes=notes)] == pytest.approx([i / 8 for i in range(24)], abs=1e-3)
    assert notes == ["wrap.ts crosses the wrap of its 33-bit MPEG timestamps (2^33 / 90 kHz, every 26.5 h) at 1.00 "
                     "s: its times go on across it"]
    assert [t for t, _ in iter_video_frames(path, start=0.75, end=1.25)] == pytest.approx(
        [0.75, 0.875, 1.0, 1.125, 1.25], abs=1e-3)
    notes = []  # two of them joined: the second starts again before the wrap
    two = list(iter_video_frames(joined(tmp_path / "two.ts", path, path), notes=notes))
    assert [t for t, _ in two] == pytest.approx([i / 8 for i in range(48)], abs=1e-3)
    assert any("jump 1 time(s)" in n for n in notes) and not any("truncated" in n for n in notes), notes


def test_a_clock_that_wraps_twice_goes_on():
    # FFmpeg unwraps the first wrap of a file; a stream running for over 26.5 h wraps again: its time goes on
    wrap = 2 ** 33 / 90000
    ts = SimpleNamespace(name="mpegts", flags=0x208)  # AVFMT_TS_DISCONT | AVFMT_SHOW_IDS
    timeline = io._Timeline("cam.ts", SimpleNamespace(format=ts), SimpleNamespace(average_rate=10))
    own = [2 * wrap - 0.2, 2 * wrap - 0.1, wrap + 0.0, wrap + 0.1]  # the second wrap, as FFmpeg gives it
    assert [timeline(t) for t in own] == pytest.approx([2 * wrap - 0.2, 2 * wrap - 0.1, 2 * wrap, 2 * wrap + 0.1])
    notes = []
    timeline.report(notes, origin=2 * wrap - 0.2)
    assert notes == ["cam.ts crosses the wrap of its 33-bit MPEG timestamps (2^33 / 90 kHz, every 26.5 h) at 0.20 s: "
                     "its times go on across it"]
    mp4 = io._Timeline("clip.mp4", SimpleNamespace(format=SimpleNamespace(name="mov,mp4,m4a,3gp,3g2,mj2", flags=0)))
    assert [mp4(t) for t in (0.0, 0.5, 20.5, 21.0, 1.0)] == [0.0, 0.5, 20.5, 21.0, 21.5]  # a gap is kept; back is not


@needs_av
def test_damaged_and_truncated_files_give_what_they_hold_and_say_so(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(200)]
    path = write_video(tmp_path / "long.mp4", frames, rate=25, pix_fmt="yuv420p", options={"preset": "ultrafast"},
                       container_options={"movflags": "+faststart"})
    data = bytearray((tmp_path / "long.mp4").read_bytes())
    n = len(data)
    data[n // 3:n // 3 + n // 10] = np.random.default_rng(0).integers(0, 255, n // 10, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    notes = []
    kept = [t for t, _ in iter_video_frames(str(tmp_path / "damaged.mp4"), notes=notes)]  # it was "corrupt"
    assert 150 < len(kept) < 200 and any("damaged packet(s)" in n for n in notes), (len(kept), notes)
    (tmp_path / "cut_short.mp4").write_bytes(bytes(data[:int(0.6 * n)]))
    notes = []
    kept = [t for t, _ in iter_video_frames(str(tmp_path / "cut_short.mp4"), notes=notes)]
    assert kept[-1] < 6.0 and any("may be truncated" in n for n in notes), (kept[-1], notes)
    notes = []
    assert len(list(iter_video_frames(path, notes=notes))) == 200 and notes == []


@needs_av
def test_a_file_read_as_a_camera_is_timed_by_its_rate_without_timestamps(tmp_path):
    pytest.importorskip("cv2")
    from clipdfer.data.io import iter_camera_frames
    path = write_video(tmp_path / "pi.h264", [picture() for _ in range(24)], rate=8, fmt="h264")
    times = [t for t, _ in iter_camera_frames(path)]  # it was 1 frame at 0.00 s; OpenCV knows no rate for it
    assert len(times) == 24 and times[0] == 0 and np.allclose(np.diff(times), times[1])
