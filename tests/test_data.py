"""Reading clips strictly: frame order, frame counts, unreadable files, sampling to the index, transforms; frame
folders as users have them (macOS sidecars, crops of varying size, EXIF orientation) and their fps sampling."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import clipdfer
from clipdfer.data import ClipDataset, SyntheticClips, build_transform, read_annotations, segment_indices
from clipdfer.data.io import iter_frame_folder, iter_tensor_frames, list_frames, read_frames, read_video
from clipdfer.data.sampling import uniform_indices


def _write_clip(folder, n, size=16, names=None):
    folder.mkdir(parents=True)
    for i in range(n):
        name = names[i] if names else f"{i + 1:05d}.png"
        Image.fromarray(np.full((size, size, 3), 10 * i, dtype=np.uint8)).save(folder / name)


def test_segment_sampling_follows_dfer_clip_to_the_index():
    assert segment_indices(40, 16) == [int(2.5 / 2 + 2.5 * i) for i in range(16)]
    assert segment_indices(16, 16) == list(range(16))
    assert segment_indices(5, 8) == [0, 1, 2, 3, 4, 4, 4, 4]  # short clips repeat the last frame
    g = torch.Generator().manual_seed(0)
    train = segment_indices(50, 16, train=True, generator=g)
    assert all(i * 3 <= x < (i + 1) * 3 for i, x in enumerate(train))  # one frame inside each segment of 50 // 16
    assert uniform_indices(9, 3) == [0, 4, 8]
    with pytest.raises(ValueError, match="no frames"):
        segment_indices(0, 8)


def test_frames_are_read_in_natural_order(tmp_path):
    _write_clip(tmp_path / "c", 3, names=["f10.png", "f2.png", "f1.png"])
    assert [p.rsplit("/", 1)[1] for p in list_frames(str(tmp_path / "c"))] == ["f1.png", "f2.png", "f10.png"]


def test_annotation_dataset_and_its_errors(tmp_path):
    _write_clip(tmp_path / "clips" / "a", 20)
    _write_clip(tmp_path / "clips" / "b", 6)
    ann = tmp_path / "train.txt"
    ann.write_text("clips/a 20 3\nclips/b 6 0\n")
    records = read_annotations(str(ann), num_classes=7)
    cfg = clipdfer.get_pretrained_cfg("clipdfer_test")
    ds = ClipDataset(records, num_frames=8, transform=build_transform(cfg))
    clip, label = ds[0]
    assert clip.shape == (8, 3, 32, 32) and label == 3 and clip.dtype == torch.float32
    # frame i has value 10 * i: the middle frames of 8 segments of 20
    raw, _ = ClipDataset(records, num_frames=8)[0]
    assert [int(f[0, 0, 0]) // 10 for f in raw] == segment_indices(20, 8)

    ann.write_text("clips/a 21 3\n")
    with pytest.raises(ValueError, match="annotation says 21 frames but it has 20 image files"):
        ClipDataset(read_annotations(str(ann)), 8)[0]
    ann.write_text("clips/a 20 9\n")
    with pytest.raises(ValueError, match="label 9 is outside 0..6"):
        read_annotations(str(ann), num_classes=7)
    ann.write_text("clips/a twenty 3\n")
    with pytest.raises(ValueError, match="train.txt:1: expected 'FRAME_FOLDER NUM_FRAMES LABEL'"):
        read_annotations(str(ann))
    ann.write_text("clips/missing 4 0\n")
    with pytest.raises(FileNotFoundError, match="clips/missing"):
        ClipDataset(read_annotations(str(ann)), 8)[0]
    (tmp_path / "clips" / "b" / "00002.png").write_bytes(b"not an image")
    ann.write_text("clips/b 6 0\n")
    with pytest.raises(ValueError, match="cannot read frame .*00002.png"):
        ClipDataset(read_annotations(str(ann)), 8)[0]


def _write_video(path, n=12, size=32):
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 20 * i, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_files(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video)
    frames = read_video(str(video))
    assert frames.shape == (12, 3, 32, 32) and frames.dtype == torch.uint8
    assert abs(int(frames[5].float().mean()) - 100) < 8  # decoded in order
    ann = tmp_path / "ann.txt"
    ann.write_text("clip.mp4 12 2\n")
    clip, label = ClipDataset(read_annotations(str(ann)), 4)[0]
    assert clip.shape == (4, 3, 32, 32) and label == 2
    sized, _ = ClipDataset(read_annotations(str(ann)), 4, frame_size=(20, 24), interpolation="bicubic")[0]
    assert sized.shape == (4, 3, 20, 24) and sized.dtype == torch.uint8
    assert torch.allclose(sized.float().mean((1, 2, 3)), clip.float().mean((1, 2, 3)), atol=2)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_video(str(tmp_path / "empty.mp4"))
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        read_video(str(tmp_path / "corrupt.mp4"))


def test_train_transform_uses_one_set_of_parameters_per_clip():
    cfg = clipdfer.get_pretrained_cfg("clipdfer_test")
    tf = build_transform(cfg, train=True, augment=("crop", "flip", "color_jitter"))
    clip = torch.arange(16 * 16, dtype=torch.uint8).view(1, 1, 16, 16).expand(5, 3, 16, 16).clone()
    out = tf(clip)
    assert out.shape == (5, 3, 32, 32)
    assert all(torch.equal(out[0], out[i]) for i in range(5)), "all frames of a clip get the same augmentation"
    with pytest.raises(ValueError, match="unknown augmentations"):
        build_transform(cfg, train=True, augment=("blur",))


def test_synthetic_clips_are_deterministic_and_balanced():
    ds = SyntheticClips(14, num_classes=7, num_frames=4)
    a, la = ds[3]
    b, lb = ds[3]
    assert torch.equal(a, b) and la == lb == 3 and a.shape == (4, 3, 32, 32)
    assert sorted(ds.labels) == sorted(list(range(7)) * 2)


def _dfew_split(root, rows: str) -> None:
    """DFEW's fold-1 split files (train and test alike) with these CSV rows."""
    for split in ("train", "test"):
        d = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        d.mkdir(parents=True)
        (d / "set_1.csv").write_text(rows)


def test_dfew_official_layout_to_annotations(tmp_path, capsys):
    from clipdfer.cli import main
    root = tmp_path / "DFEW"
    for name, n in (("00007", 5), ("00012", 9)):
        _write_clip(root / "Clip" / "clip_224x224" / name, n)
    _dfew_split(root, "video_name,label\n7,1\n12,7\n")
    assert main(["prepare", "dfew", str(root), str(tmp_path / "splits"), "--folds", "1"]) == 0
    records = read_annotations(str(tmp_path / "splits" / "set_1" / "train.txt"), num_classes=7)
    assert [(r.path.endswith("00007"), r.num_frames, r.label) for r in records] == [(True, 5, 0), (False, 9, 6)]
    (root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv").write_text("video_name,label\n7,9\n")
    assert main(["prepare", "dfew", str(root), str(tmp_path / "splits"), "--folds", "1"]) == 2
    assert "label 9 is outside DFEW's 1..7" in capsys.readouterr().err
    for split in ("train", "test"):  # saved by Excel: a byte-order mark before the header
        (root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / "set_1.csv").write_bytes(
            b"\xef\xbb\xbfvideo_name,label\n7,1\n")
    assert main(["prepare", "dfew", str(root), str(tmp_path / "splits"), "--folds", "1"]) == 0


def test_ferv39k_and_mafw_official_layouts(tmp_path):
    from clipdfer.cli import main
    fer = tmp_path / "FERV39k"
    _write_clip(fer / "2_ClipsforFaceCrop" / "Action" / "Sad" / "0010", 4)
    _write_clip(fer / "2_ClipsforFaceCrop" / "Talkshow" / "Happy" / "0002", 3)
    (fer / "4_setups" / "All_scenes").mkdir(parents=True)
    for split in ("train", "test"):
        (fer / "4_setups" / "All_scenes" / f"{split}_All.csv").write_text(
            "video_path emotion\nAction/Sad/0010 Sad\nTalkshow/Happy/0002 Happy\n")
    assert main(["prepare", "ferv39k", str(fer), str(tmp_path / "fer_splits")]) == 0
    recs = read_annotations(str(tmp_path / "fer_splits" / "train.txt"), num_classes=7)
    assert [(r.num_frames, r.label) for r in recs] == [(4, 1), (3, 0)]  # sadness = 1, happiness = 0

    mafw = tmp_path / "MAFW"
    _write_clip(mafw / "data" / "frames" / "00025", 6)
    split_dir = mafw / "Train & Test Set" / "single" / "no_caption" / "set_2"
    split_dir.mkdir(parents=True)
    for split in ("train", "test"):
        (split_dir / f"{split}.txt").write_text("00025.mp4 helplessness\n")
    assert main(["prepare", "mafw", str(mafw), str(tmp_path / "mafw_splits"), "--folds", "2"]) == 0
    recs = read_annotations(str(tmp_path / "mafw_splits" / "set_2" / "test.txt"), num_classes=11)
    assert [(r.num_frames, r.label) for r in recs] == [(6, 9)]  # helplessness = 9 in MAFW_CLASSES


# ---------------------------------------------------------------------------------------------------- frame folders
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000)  # a macOS ._ sidecar, not an image


def test_hidden_sidecar_files_are_skipped(tmp_path, capsys):
    from clipdfer.cli import main
    root = tmp_path / "DFEW"
    clip = root / "Clip" / "clip_224x224" / "00007"
    _write_clip(clip, 24)
    for i in range(24):
        (clip / f"._{i + 1:05d}.png").write_bytes(APPLE_DOUBLE)
    (clip / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert [os.path.basename(p) for p in list_frames(str(clip))] == [f"{i + 1:05d}.png" for i in range(24)]
    _dfew_split(root, "video_name,label\n7,3\n")
    assert main(["prepare", "dfew", str(root), str(tmp_path / "splits"), "--folds", "1"]) == 0
    records = read_annotations(str(tmp_path / "splits" / "set_1" / "train.txt"), num_classes=7)
    assert [(r.num_frames, r.label) for r in records] == [(24, 2)]  # 24 of 24 frames, not 48
    frames, _ = ClipDataset(records, 8)[0]
    assert frames.shape == (8, 3, 16, 16)


def _write_crops(folder, n=24, seed=0):
    """Face crops of one clip as a tracker writes them: sizes 68-75 x 87-93 px (W x H), frame i of value 10 i."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    sizes = [(int(rng.integers(87, 94)), int(rng.integers(68, 76))) for _ in range(n)]  # (H, W)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(folder / f"{i + 1:05d}.png")
    return sizes


def test_face_crops_of_slightly_different_sizes_are_one_clip(tmp_path):
    sizes = _write_crops(tmp_path / "crops")
    assert len(set(sizes)) > 1
    paths = list_frames(str(tmp_path / "crops"))
    clip = read_frames(paths, range(24))  # to the first frame's size
    assert clip.shape == (24, 3, *sizes[0]) and clip.dtype == torch.uint8
    assert [int(f[0].float().mean().round()) for f in clip] == [10 * i for i in range(24)]
    sized = read_frames(paths, [0, 5, 5, 23], size=(40, 30), interpolation="bicubic")  # every frame to (H, W)
    assert sized.shape == (4, 3, 40, 30) and [int(f[0, 0, 0]) for f in sized] == [0, 50, 50, 230]
    with pytest.raises(ValueError, match="interpolation='cubic': expected one of"):
        read_frames(paths, [0], interpolation="cubic")
    ann = tmp_path / "ann.txt"
    ann.write_text("crops 24 1\n")
    records = read_annotations(str(ann))
    cfg = clipdfer.get_pretrained_cfg("clipdfer_test")
    clip, label = ClipDataset(records, 8, transform=build_transform(cfg), frame_size=(32, 32),
                              interpolation=cfg.interpolation)[0]
    assert clip.shape == (8, 3, 32, 32) and label == 1
    raw, _ = ClipDataset(records, 8, frame_size=(56, 48))[0]
    assert raw.shape == (8, 3, 56, 48) and [int(f[0, 0, 0]) // 10 for f in raw] == segment_indices(24, 8)


def test_train_and_eval_read_frames_at_the_models_input_size(tmp_path, monkeypatch):
    import clipdfer.eval as ev
    from clipdfer.recipes import Recipe
    from clipdfer.train import TrainConfig, _datasets
    _write_crops(tmp_path / "crops")
    ann = tmp_path / "ann.txt"
    ann.write_text("crops 24 1\ncrops 24 2\n")
    cfg = clipdfer.get_pretrained_cfg("clipdfer_test")
    model = SimpleNamespace(pretrained_cfg=cfg, num_frames=4, num_classes=7)
    model.to = lambda device: model
    train, val, test = _datasets(TrainConfig(model="clipdfer_test", out=str(tmp_path / "out"), train_list=str(ann),
                                             test_list=str(ann), select_on="test"), model, Recipe())
    for data in (train, test):
        assert data.frame_size == tuple(cfg.input_size[-2:]) and data.interpolation == cfg.interpolation
        assert data[0][0].shape == (4, 3, *cfg.input_size[-2:])
    seen = []
    monkeypatch.setattr(ev, "evaluate", lambda net, data, *a, **k: seen.append(data))
    ev.evaluate_model(model, str(ann), synthetic=False, batch_size=2, device="cpu")
    assert seen[0].frame_size == tuple(cfg.input_size[-2:]) and seen[0].interpolation == cfg.interpolation


# EXIF orientation tag -> how a viewer shows the stored pixels
EXIF_ORIENTATIONS = {1: lambda x: x, 2: lambda x: x[:, ::-1], 3: lambda x: np.rot90(x, 2), 4: lambda x: x[::-1],
                     5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, -1),
                     7: lambda x: np.rot90(x, 2).swapaxes(0, 1), 8: lambda x: np.rot90(x, 1)}


@pytest.mark.parametrize("orientation", list(EXIF_ORIENTATIONS))
def test_frames_are_read_as_a_viewer_shows_them(tmp_path, orientation):
    stored = np.zeros((12, 20, 3), np.uint8)
    stored[:6, :10], stored[:6, 10:], stored[6:, :10], stored[6:, 10:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), 255
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    (tmp_path / "c").mkdir()
    Image.fromarray(stored).save(tmp_path / "c" / "00001.png", exif=exif)
    shown = np.ascontiguousarray(EXIF_ORIENTATIONS[orientation](stored))
    assert np.array_equal(read_frames(list_frames(str(tmp_path / "c")), [0])[0].permute(1, 2, 0).numpy(), shown)
    [(t, frame)] = list(iter_frame_folder(str(tmp_path / "c")))
    assert t == 0.0 and np.array_equal(frame, shown)


def test_frame_folders_and_tensors_are_sampled_on_the_fps_grid(tmp_path):
    video = torch.stack([torch.full((3, 16, 16), 5 * i, dtype=torch.uint8) for i in range(50)])  # frame i: 5 i
    (tmp_path / "c").mkdir()
    for i, frame in enumerate(video):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp_path / "c" / f"{i + 1:05d}.png")
    for frames in (lambda **k: iter_frame_folder(str(tmp_path / "c"), **k),
                   lambda **k: iter_tensor_frames(video, **k),
                   lambda **k: iter_tensor_frames(video.float() / 255, **k)):
        every = list(frames())
        assert [t for t, _ in every] == [i / 25 for i in range(50)]
        assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 and f[0, 0, 0] == 5 * i
                   for i, (_, f) in enumerate(every))
        kept = list(frames(fps=8))
        assert [round(t, 6) for t, _ in kept][:5] == [0.0, 0.12, 0.24, 0.36, 0.48] and len(kept) == 16
        assert [int(f[0, 0, 0]) // 5 for _, f in kept][:5] == [0, 3, 6, 9, 12]  # the frames at those times
        assert [t for t, _ in frames(start=1.0, end=1.2)] == [1.0, 1.04, 1.08, 1.12, 1.16, 1.2]
        assert [t for t, _ in frames(fps=5, start=1.0, end=2.0, folder_fps=10)] == [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
        with pytest.raises(ValueError, match="folder_fps=0: expected the frame rate"):
            list(frames(folder_fps=0))
    with pytest.raises(ValueError, match=r"expected a video tensor \(T, 3, H, W\), got \(3, 16, 16\): for one frame "
                                         r"use frame.unsqueeze\(0\)"):
        list(iter_tensor_frames(video[0]))


def test_prepare_writes_splits_that_read_back_from_a_folder_with_a_space(tmp_path, monkeypatch):
    from clipdfer.cli import main
    home = tmp_path / "my dfew"
    _write_clip(home / "DFEW" / "Clip" / "clip_224x224" / "00007", 5)
    _dfew_split(home / "DFEW", "video_name,label\n7,1\n")
    monkeypatch.chdir(home)
    assert main(["prepare", "dfew", "DFEW", "DFEW/splits", "--folds", "1"]) == 0
    records = read_annotations(str(home / "DFEW" / "splits" / "set_1" / "train.txt"), num_classes=7)
    assert [(r.path, r.num_frames) for r in records] == [(str(home / "DFEW" / "Clip" / "clip_224x224" / "00007"), 5)]
    assert main(["prepare", "dfew", "DFEW", str(tmp_path / "other splits"), "--folds", "1"]) == 2  # no way to write it
    assert not list((tmp_path / "other splits").rglob("*.tmp"))


# ---------------------------------------------------------------------------------------- bit depths and modes
def _grey(values) -> np.ndarray:
    values = np.asarray(values, np.uint8)
    return np.repeat(values[:, :, None], 3, axis=2)


def _encoded(path, codec, pix_fmt, array):
    """An image file written by FFmpeg's encoder (PyAV): 16-bit RGB PNG / TIFF, which Pillow cannot write."""
    av = pytest.importorskip("av")
    context = av.CodecContext.create(codec, "w")
    context.height, context.width, context.pix_fmt = array.shape[0], array.shape[1], pix_fmt
    frame = av.VideoFrame.from_ndarray(array, format=pix_fmt)
    path.write_bytes(b"".join(bytes(p) for p in list(context.encode(frame)) + list(context.encode(None))))


def _mode_cases(folder):
    """(name, file, what a viewer shows as 8-bit RGB, tolerance) for every bit depth and mode Pillow reads from a
    file; expected values by arithmetic: round(v * 255 / full scale), alpha dropped, palettes expanded."""
    cases = []
    ramp16 = (np.arange(48).reshape(6, 8) * 1365).astype(np.uint16)  # 0 ... 64155: every 16-bit step, unrounded
    want16 = _grey(np.round(ramp16 * 255.0 / 65535))
    Image.fromarray(ramp16).save(folder / "i16.png")  # Pillow: I;16 (ffprobe: png gray16be)
    cases.append(("I;16 PNG", "i16.png", want16, 0))
    Image.frombytes("I;16B", (8, 6), ramp16.astype(">u2").tobytes()).save(folder / "i16b.tif")  # I;16B
    cases.append(("I;16B TIFF", "i16b.tif", want16, 0))
    (folder / "i16.pgm").write_bytes(b"P5 8 6 65535\n" + ramp16.astype(">u2").tobytes())  # Pillow: I
    cases.append(("I (16-bit PGM)", "i16.pgm", want16, 0))
    Image.fromarray(np.array([[0, 2 ** 30, 2 ** 31 - 1, -5]], np.int32)).save(folder / "i32.tif")  # I, 32 bits
    cases.append(("I (32-bit TIFF)", "i32.tif", _grey([[0, 128, 255, 0]]), 0))
    Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)).save(folder / "f.tif")  # F
    cases.append(("F TIFF", "f.tif", _grey([[0, 64, 128, 255]]), 0))
    Image.fromarray(np.array([[True, False], [False, True]])).save(folder / "bilevel.png")  # 1
    cases.append(("1 PNG", "bilevel.png", _grey([[255, 0], [0, 255]]), 0))
    Image.new("L", (2, 2), 77).save(folder / "l.png")
    cases.append(("L PNG", "l.png", _grey(np.full((2, 2), 77)), 0))
    Image.new("LA", (2, 2), (77, 0)).save(folder / "la.png")  # fully transparent: its grey as stored
    cases.append(("LA PNG", "la.png", _grey(np.full((2, 2), 77)), 0))
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(folder / "p.png", transparency=1)  # the colour of index 1, though transparent
    cases.append(("P PNG", "p.png", np.full((2, 2, 3), (200, 100, 50), np.uint8), 0))
    Image.new("RGBA", (2, 2), (10, 20, 30, 0)).save(folder / "rgba.png")
    cases.append(("RGBA PNG", "rgba.png", np.full((2, 2, 3), (10, 20, 30), np.uint8), 0))
    Image.new("CMYK", (2, 2), (0, 51, 255, 0)).save(folder / "cmyk.tif")  # R = 255 (1 - C) (1 - K) ...
    cases.append(("CMYK TIFF", "cmyk.tif", np.full((2, 2, 3), (255, 204, 0), np.uint8), 0))
    Image.new("LAB", (2, 2), (128, 128, 128)).save(folder / "lab.tif")  # L* 50.2, neutral: sRGB grey 119.7
    cases.append(("LAB TIFF", "lab.tif", _grey(np.full((2, 2), 120)), 1))
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 257 * 145, 1000  # 1000: 3.9, Pillow keeps the high byte
    _encoded(folder / "rgb16.png", "png", "rgb48be", rgb16)  # Pillow: RGB (ffprobe: png rgb48be)
    cases.append(("16-bit RGB PNG", "rgb16.png", np.full((2, 2, 3), (255, 145, 4), np.uint8), 1))
    _encoded(folder / "rgb16.tif", "tiff", "rgb48le", rgb16)  # ffprobe: tiff rgb48le
    cases.append(("16-bit RGB TIFF", "rgb16.tif", np.full((2, 2, 3), (255, 145, 4), np.uint8), 1))
    _encoded(folder / "rgba16.png", "png", "rgba64be", np.dstack([rgb16, np.full((2, 2), 0, np.uint16)]))
    cases.append(("16-bit RGBA PNG", "rgba16.png", np.full((2, 2, 3), (255, 145, 4), np.uint8), 1))
    return cases


def test_every_bit_depth_and_mode_is_read_as_a_viewer_shows_it(tmp_path):
    from clipdfer.data.io import read_image
    for name, file, want, tolerance in _mode_cases(tmp_path):
        got = read_image(str(tmp_path / file))  # it clipped 16-bit and 32-bit samples to 255, floats to 0 or 1
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        assert int(np.abs(got.astype(int) - want).max()) <= tolerance, (name, got[0, :4].tolist(), want[0, :4].tolist())


def test_16_bit_frames_are_scaled_not_clipped_on_every_reading_path(tmp_path):
    # a face crop saved as 16-bit PNG (ffprobe: png gray16be): mean 145 in 8 bits; it was read as 251
    rng = np.random.default_rng(0)
    eight = rng.integers(60, 231, (24, 20))
    eight = (eight + 145 - int(round(eight.mean()))).astype(np.uint8)  # mean 145
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(eight.astype(np.uint16) * 257).save(folder / f"{i:05d}.png")  # v * 257: exactly v in 8 bits
    want = _grey(eight)
    assert Image.open(folder / "00000.png").mode == "I;16" and abs(want.mean() - 145) < 1
    paths = list_frames(str(folder))
    for got in (read_frames(paths, [0, 2]).permute(0, 2, 3, 1).numpy(),
                np.stack([f for _, f in iter_frame_folder(str(folder))])):
        assert all(np.array_equal(f, want) for f in got)
    (tmp_path / "ann.txt").write_text("clip 3 4\n")
    raw, _ = ClipDataset(read_annotations(str(tmp_path / "ann.txt")), 2)[0]
    assert np.array_equal(raw[0].permute(1, 2, 0).numpy(), want)


def test_modes_pillow_only_makes_in_memory_and_floats_out_of_range():
    from clipdfer.data.io import to_rgb
    pa = Image.new("PA", (2, 2), (1, 0))
    pa.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    for image, want in ((pa, (200, 100, 50)), (Image.new("La", (2, 2), (100, 255)), (100, 100, 100)),
                        (Image.new("RGBa", (2, 2), (100, 50, 20, 255)), (100, 50, 20)),
                        (Image.new("HSV", (2, 2), (0, 255, 255)), (255, 0, 0)),
                        (Image.new("YCbCr", (2, 2), (128, 128, 128)), (128, 128, 128)),
                        (Image.frombytes("I;16L", (2, 2), np.full(4, 257 * 9, "<u2").tobytes()), (9, 9, 9))):
        got = to_rgb(image)  # La was "conversion from La to L not supported"
        assert got.shape == (2, 2, 3) and got.dtype == np.uint8 and tuple(got[0, 0]) == want, image.mode
    with pytest.raises(ValueError, match=r"frame.tif: a float image \(mode F\) with values from 0 to 255, expected "
                                         r"\[0, 1\]"):
        to_rgb(Image.fromarray(np.array([[0.0, 255.0]], np.float32)), name="frame.tif")


# ---------------------------------------------------------------------------------------------------- animations
def _animated(path, n=12, duration=40, **save):
    frames = [Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)) for i in range(n)]  # frame i: 20 i
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration, loop=0, **save)
    return path


def test_animated_images_are_clips_for_training_and_never_one_frame_silently(tmp_path):
    _animated(tmp_path / "smile.webp", lossless=True)
    ann = tmp_path / "ann.txt"
    ann.write_text("smile.webp 12 3\n")  # it was "clip folder 'smile.webp' does not exist"
    raw, label = ClipDataset(read_annotations(str(ann)), 4)[0]
    assert label == 3 and [int(f[0, 0, 0]) for f in raw] == [20 * i for i in segment_indices(12, 4)]
    clip = tmp_path / "clip"  # an animation among frames: one frame of the folder, and said so
    _write_clip(clip, 3)
    _animated(clip / "00004.gif")
    notes = []
    assert len(list(iter_frame_folder(str(clip), notes=notes))) == 4
    assert notes == ["clip: 1 of its images are animations (00004.gif: 12 frames): each is one frame of this folder, "
                     "its first; give such a file by itself to read its frames"]
    with pytest.raises(ValueError, match=r"00004.gif' is an animation of 12 frames, not one frame of the clip"):
        read_frames(list_frames(str(clip)), [3])  # training is strict
    with pytest.raises(ValueError, match=r"smile.webp' is a file, not a folder of frames"):
        list_frames(str(tmp_path / "smile.webp"))
