"""Videos made for tests with PyAV (no ffmpeg binary): lossless H.264, variable rates, display matrices in the
container (as phones write them) and display-orientation SEI in the bitstream."""

import fractions
import struct

import numpy as np

try:
    import av
except ImportError:  # the tests that use these helpers skip without PyAV
    av = None


def picture(height: int = 32, width: int = 48) -> np.ndarray:
    """Coloured quadrants and a white mark near the top-left corner: every rotation and mirroring differs."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w], img[:h, w:], img[h:, :w], img[h:, w:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    img[2:6, 2:12] = 255
    return img


def write_video(path, frames, rate=8, codec="libx264", fmt=None, pix_fmt="yuv444p", times=None, options=None,
                container_options=None):
    """Encode RGB frames (libx264: losslessly unless ``options`` say otherwise); ``times`` (s, on a 1 ms clock) makes
    a variable-rate file."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options is not None or codec == "libx264":
            stream.options = options or {"qp": "0", "preset": "ultrafast"}  # lossless, but for RGB <-> YUV
        if times is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def joined(path, *parts):
    """The files ``parts`` joined byte by byte, as ``cat a.ts b.ts > joined.ts`` does (cameras and recorders write
    MPEG-TS files so: each part's timestamps start again)."""
    with open(str(path), "wb") as out:
        for part in parts:
            with open(str(part), "rb") as f:
                out.write(f.read())
    return str(path)


def _boxes(data: bytes, start: int, end: int):
    """(type, offset, size) of the mp4 boxes between ``start`` and ``end``."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size == 1:  # a 64-bit size follows the type
            size = struct.unpack(">Q", data[start + 8:start + 16])[0]
        elif size == 0:  # to the end of the file
            size = end - start
        yield kind, start, size
        start += size


def tkhd_matrix_offset(data: bytes) -> int:
    """Where the 36-byte matrix of the first track's ``tkhd`` box is: after the 8-byte box header, 4 bytes of
    version and flags, then 36 bytes of fields (version 0: creation, modification, track id, reserved, duration,
    8 reserved, layer, group, volume, reserved) or 48 (version 1: 64-bit times and duration)."""
    for kind, moov, size in _boxes(data, 0, len(data)):
        if kind == b"moov":
            for kind, trak, trak_size in _boxes(data, moov + 8, moov + size):
                if kind == b"trak":
                    for kind, tkhd, _ in _boxes(data, trak + 8, trak + trak_size):
                        if kind == b"tkhd":
                            return tkhd + 12 + (48 if data[tkhd + 8] == 1 else 36)
    raise AssertionError("no moov/trak/tkhd box")


def with_display_matrix(src, dst, a: int, b: int, c: int, d: int) -> None:
    """Copy of mp4 ``src`` whose track carries the display matrix (a b 0; c d 0; 0 0 1), as ffmpeg's ``-metadata:s:v
    rotate=`` or a phone writes it."""
    data = bytearray(src.read_bytes())
    at = tkhd_matrix_offset(data)
    assert struct.unpack(">9i", data[at:at + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)  # identity
    data[at:at + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    dst.write_bytes(bytes(data))


def with_orientation_sei(src, dst, rotate: int, flip: str = "", fmt=None) -> None:
    """Copy of an H.264 file with a display-orientation SEI (anticlockwise ``rotate`` degrees after ``flip``)."""
    spec = f"h264_metadata=display_orientation=insert:rotate={rotate}" + (f":flip={flip}" if flip else "")
    if fmt == "h264":
        spec = "h264_mp4toannexb," + spec  # a raw stream carries start codes, not mp4's length prefixes
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        ist = inp.streams.video[0]
        if hasattr(out, "add_stream_from_template"):
            ost = out.add_stream_from_template(ist)
        else:  # PyAV < 14
            ost = out.add_stream(template=ist)
        bsf = av.bitstream.BitStreamFilterContext(spec, ist, ost)
        for packet in list(inp.demux(ist)) + [None]:
            for filtered in bsf.filter(packet if packet is None or packet.size else None):
                filtered.stream, filtered.time_base = ost, ist.time_base  # muxing rescales to the output's
                out.mux(filtered)
