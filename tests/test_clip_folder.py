"""Your own data in a folder (issue 29, item 2): ``ClipFolder`` (a folder per class, as torchvision's ImageFolder,
videos or frame folders, prepared as the model's pretrained_cfg says), ``clipdfer train --data DIR`` and
``clipdfer eval --data DIR`` with ``DIR/train/<class>`` and ``DIR/test/<class>``."""

import json
import os

import numpy as np
import pytest
import torch

import clipdfer
from clipdfer.data import ClipFolder, build_transform, find_classes
from clipdfer.data.io import read_frames

CLASSES = ("calm", "joy", "pain")


def _frames(label: int, n: int = 10, size: int = 24, seed: int = 0):
    """A clip whose colour says its class: class c is channel c, brighter every frame."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, (n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, :, :, label] = 120 + 10 * i
    return frames


def _frame_folder(path, frames) -> str:
    from PIL import Image
    os.makedirs(path)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(path, f"{i + 1}.png"))  # 1.png ... 10.png: natural order matters
    return str(path)


def _model_kwargs(error) -> dict:
    """The --model-kwargs JSON an error message gives."""
    import re
    found = re.search(r"--model-kwargs '(\{.*?\})'", str(error.value))
    assert found, str(error.value)
    return json.loads(found.group(1))


def _layout(root, per_class=(2, 1), classes=CLASSES):
    """root/train/<class>/clipK/ and root/test/<class>/clipK/ frame folders."""
    for split, count in zip(("train", "test"), per_class):
        for label, name in enumerate(classes):
            for k in range(count):
                _frame_folder(root / split / name / f"clip{k}", _frames(label, seed=k))
    return str(root)


def test_a_folder_per_class_is_an_imagefolder_of_clips_prepared_as_the_model_says(tmp_path):
    model = clipdfer.create_model("clipdfer_test")
    root = _layout(tmp_path)
    data = ClipFolder(os.path.join(root, "train"), model)
    assert data.classes == list(CLASSES) and data.class_to_idx == {"calm": 0, "joy": 1, "pain": 2}
    first = [os.path.join("train", "calm", "clip0"), os.path.join("train", "calm", "clip1")]
    assert [os.path.relpath(p, root) for p, _ in data.samples[:2]] == first
    assert data.targets == [0, 0, 1, 1, 2, 2] and len(data) == 6
    clip, label = data[2]
    cfg = model.pretrained_cfg
    assert label == 1 and clip.shape == (cfg.num_frames, 3, *cfg.input_size[1:]) and clip.dtype == torch.float32
    # test-time frames: the middle of each of T segments of the 10 frames, resized and normalised as the cfg says
    paths = [os.path.join(data.samples[2][0], f"{i}.png") for i in range(1, 11)]
    expected = build_transform(cfg)(read_frames(paths, [0, 1, 3, 4, 5, 6, 8, 9], tuple(cfg.input_size[1:]),
                                                cfg.interpolation))
    torch.testing.assert_close(clip, expected)
    with torch.no_grad():
        assert model(clip.unsqueeze(0)).shape == (1, 7)  # what the model takes, as it comes
    ordered = ClipFolder(os.path.join(root, "train"), model.pretrained_cfg, classes=["pain", "calm", "joy"],
                         train=True)
    assert [(os.path.basename(os.path.dirname(p)), y) for p, y in ordered.samples[::2]] == [
        ("pain", 0), ("calm", 1), ("joy", 2)]  # the given order; a cfg works as the model does
    assert ordered.train and ordered[0][0].shape == clip.shape


def test_videos_and_frame_folders_mix_in_a_class(tmp_path):
    pytest.importorskip("av", reason="video files are decoded with PyAV (the video extra)")
    from videos import write_video
    (tmp_path / "joy").mkdir()
    write_video(tmp_path / "joy" / "b.mp4", list(_frames(1)))
    _frame_folder(tmp_path / "joy" / "a", _frames(1))
    (tmp_path / "joy" / "notes.txt").write_text("ignored")
    (tmp_path / "joy" / "._b.mp4").write_bytes(b"macOS sidecar")
    data = ClipFolder(str(tmp_path), clipdfer.create_model("clipdfer_test"))
    assert [os.path.basename(p) for p, _ in data.samples] == ["a", "b.mp4"]
    a, b = data[0][0], data[1][0]
    assert a.shape == b.shape and torch.allclose(a, b, atol=0.1)  # lossless video: the same clip


def test_folders_that_are_not_a_layout_are_named_with_the_fix(tmp_path):
    cfg = clipdfer.create_model("clipdfer_test").pretrained_cfg
    with pytest.raises(FileNotFoundError, match="is not a folder: give the folder that holds one folder per class"):
        ClipFolder(str(tmp_path / "missing"), cfg)
    with pytest.raises(ValueError, match="holds no class folder"):
        find_classes(str(tmp_path))
    _frame_folder(tmp_path / "calm" / "c1", _frames(0, 3))
    (tmp_path / "joy").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*joy' holds no clip"):
        ClipFolder(str(tmp_path), cfg)
    _frame_folder(tmp_path / "joy" / "c1", _frames(1, 3))
    with pytest.raises(ValueError, match=r"no folder for \['pain'\]; give each class once"):
        ClipFolder(str(tmp_path), cfg, classes=["calm", "joy", "pain"])
    with pytest.raises(ValueError, match=r"folders \['joy'\] not in classes"):
        ClipFolder(str(tmp_path), cfg, classes=["calm"])
    from PIL import Image
    Image.fromarray(_frames(1, 1)[0]).save(tmp_path / "joy" / "0001.png")
    with pytest.raises(ValueError, match=r"holds image files \(0001.png ...\): .*a folder of its own"):
        ClipFolder(str(tmp_path), cfg)
    os.remove(tmp_path / "joy" / "0001.png")
    (tmp_path / "joy" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty' holds no image files"):
        ClipFolder(str(tmp_path), cfg)


def test_train_and_eval_read_folders_and_the_model_takes_their_classes(tmp_path, capsys):
    from clipdfer.cli import main
    root = _layout(tmp_path / "data")
    out = str(tmp_path / "run")
    assert main(["train", "--model", "clipdfer_test", "--data", root, "--out", out, "--epochs", "1",
                 "--batch-size", "2", "--val-fraction", "0.5"]) == 0
    printed = capsys.readouterr().out  # train prints its log on the terminal
    assert "test UAR" in printed
    assert f"the classes of {root}/train, ['calm', 'joy', 'pain'], replace the model's (happiness" in printed
    results = json.load(open(os.path.join(out, "results.json")))
    assert (results["train_clips"], results["selection_clips"], results["test_clips"]) == (3, 3, 3)
    saved = clipdfer.create_model(f"local-dir:{out}/checkpoints/last")
    assert saved.class_names == CLASSES and saved.weights == "finetuned"
    assert main(["eval", "--model", f"local-dir:{out}/checkpoints/last", "--data", root, "--out",
                 str(tmp_path / "eval"), "--device", "cpu"]) == 0
    report = json.load(open(tmp_path / "eval" / "results.json"))["folds"]["test"]
    assert report["test_list"] == os.path.join(root, "test") and sum(sum(r) for r in report["confusion_matrix"]) == 3


def test_a_model_takes_the_folders_classes_as_its_head_allows():
    from clipdfer.train import use_classes
    prompt = clipdfer.create_model("clipdfer_test")
    use_classes(prompt, list(CLASSES), "data/train")
    assert prompt.class_names == CLASSES and prompt.has_prompt_head  # new class texts, the head kept
    linear = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0)
    use_classes(linear, list(CLASSES), "data/train")
    assert linear.class_names == CLASSES and linear.get_classifier().out_features == 3
    fixed = clipdfer.create_model("a3lign_test")  # class sentences learned per class: fixed when built
    with pytest.raises(ValueError, match=r"are fixed when it is built: build it with clipdfer.create_model\("
                                         r"'a3lign_test', class_names=.*--model-kwargs "
                                         r"'\{\"class_names\": \[\"calm\", \"joy\", \"pain\"\]\}'") as e:
        use_classes(fixed, list(CLASSES), "data/train")
    assert clipdfer.create_model("a3lign_test", **_model_kwargs(e)).class_names == CLASSES  # the advice works
    built = use_classes(fixed, list(CLASSES), "data/train", rebuild=lambda **kw: clipdfer.create_model(
        "a3lign_test", **kw))  # as train --data does: built again for the classes
    assert built is not fixed and built.class_names == CLASSES
    csc = clipdfer.create_model("coop_test", class_specific_contexts=True)  # a context per class: 7, not 3
    assert csc.build_kwargs_for_classes(list(CLASSES)) == {"class_names": list(CLASSES),
                                                           "class_specific_contexts": True}
    with pytest.raises(ValueError, match=r"learned for 7 classes, so 3 classes need a model built for them") as e:
        csc.set_classes(list(CLASSES))
    assert clipdfer.create_model("coop_test", **_model_kwargs(e)).class_names == CLASSES
    same = clipdfer.create_model("clipdfer_test", class_names=list(CLASSES))
    head = same.get_classifier()
    use_classes(same, list(CLASSES), "data/train")  # the same classes: nothing changes
    assert same.class_names == CLASSES and type(same.get_classifier()) is type(head)


def test_train_data_builds_dferclip_for_the_folders_classes(tmp_path, capsys):
    """DFER-CLIP's contexts are class-specific and its texts are descriptors of its classes: train --data builds it for
    the folders' classes (their names as texts: they have no descriptor) and says so."""
    from clipdfer.cli import main
    root = _layout(tmp_path / "data", per_class=(2, 0))
    out = str(tmp_path / "run")
    assert main(["train", "--model", "dferclip_test", "--data", root, "--out", out, "--epochs", "1",
                 "--batch-size", "2", "--val-fraction", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "DFERCLIP's class-specific parts are fixed when it is built, so it is built again with class_names=" \
           "['calm', 'joy', 'pain'], text_type='class_names'" in printed
    saved = clipdfer.create_model(f"local-dir:{out}/checkpoints/last")
    assert saved.class_names == CLASSES and saved.class_texts == ("calm.", "joy.", "pain.")


def test_dferclip_set_classes_errors_give_a_fix_that_works():
    model = clipdfer.create_model("dferclip_test")
    with pytest.raises(ValueError, match=r"learned for 7 classes, so 3 classes need a model built for them: "
                                         r"clipdfer.create_model\('dferclip_test', class_names=\['calm', 'joy', "
                                         r"'pain'\], text_type='class_names'\)") as e:
        model.set_classes(list(CLASSES))
    assert clipdfer.create_model("dferclip_test", **_model_kwargs(e)).class_names == CLASSES
    seven = [f"c{i}" for i in range(7)]
    with pytest.raises(ValueError, match=r"no DFER-CLIP descriptor for classes .*set_classes\(\['c0', .*"
                                         r"class_texts=\['c0.', ") as e:
        model.set_classes(seven)
    texts = json.loads(str(e.value).split("class_texts=")[1].split("]")[0].replace("'", '"') + "]")
    model.set_classes(seven, class_texts=texts)  # following the advice keeps the learned contexts
    assert model.class_names == tuple(seven) and model.class_texts == tuple(f"c{i}." for i in range(7))


def test_pmfer_says_everything_its_classes_need_in_one_message(tmp_path, capsys):
    """The first message gives class_names and phrases; passing its --model-kwargs as given trains."""
    from clipdfer.cli import main
    root = _layout(tmp_path / "data", per_class=(2, 0))
    args = ["train", "--model", "pmfer_test", "--data", root, "--out", str(tmp_path / "run"), "--epochs", "1",
            "--batch-size", "2", "--val-fraction", "0.5"]
    from clipdfer.train import use_classes
    with pytest.raises(ValueError, match=r"classes \['calm', 'joy'\] have none built in .*phrases=\{'calm': "
                                         r"\['calm expression'\], 'joy': \['joy expression'\]\}.*replacing each "
                                         r"placeholder phrase") as e:
        use_classes(clipdfer.create_model("pmfer_test"), list(CLASSES), f"{root}/train")
    kwargs = _model_kwargs(e)
    assert kwargs == {"class_names": list(CLASSES), "phrases": {"calm": ["calm expression"],
                                                                "joy": ["joy expression"]}}
    assert main(args) == 2
    assert "phrases" in capsys.readouterr().err
    assert main(args + ["--model-kwargs", json.dumps(kwargs)]) == 0
    saved = clipdfer.create_model(f"local-dir:{tmp_path}/run/checkpoints/last")
    assert saved.class_names == CLASSES and saved.phrases["calm"] == ["calm expression"]


def test_clips_in_sub_folders_are_walked_a_frame_folder_is_one_clip(tmp_path):
    cfg = clipdfer.create_model("clipdfer_test").pretrained_cfg
    _frame_folder(tmp_path / "calm" / "actor1" / "c1", _frames(0, 3))  # root/<class>/<actor>/<clip>/<frames>
    _frame_folder(tmp_path / "calm" / "actor2" / "c2", _frames(0, 3))
    _frame_folder(tmp_path / "joy" / "c3", _frames(1, 3))
    _frame_folder(tmp_path / "joy" / "c3" / "thumbs", _frames(1, 2))  # inside a frame folder: not another clip
    data = ClipFolder(str(tmp_path), cfg)
    assert [(os.path.relpath(p, tmp_path), y) for p, y in data.samples] == [
        ("calm/actor1/c1", 0), ("calm/actor2/c2", 0), ("joy/c3", 1)]
    assert data[1][0].shape[0] == cfg.num_frames
    (tmp_path / "joy" / "c3" / "x.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"c3' holds both image files \(1.png ...\) and videos .*move the videos out"):
        ClipFolder(str(tmp_path), cfg)
    os.remove(tmp_path / "joy" / "c3" / "x.mp4")
    os.symlink(tmp_path / "calm", tmp_path / "calm" / "actor1" / "loop")  # a link loop is walked once
    assert len(ClipFolder(str(tmp_path), cfg)) == 3
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "joy" / "gone.mp4")
    with pytest.raises(FileNotFoundError, match=r"gone.mp4' is a broken symbolic link \(to .*nowhere.mp4'\): point "
                                                r"it at an existing clip or remove it") as e:
        ClipFolder(str(tmp_path), cfg)
    assert "annotation" not in str(e.value)


def test_a_root_of_splits_says_to_give_one(tmp_path):
    root = _layout(tmp_path / "data")
    with pytest.raises(ValueError, match=r"data' holds the splits test/, train/, not class folders: give one split, "
                                         r"e.g. ClipFolder\('.*data/train', model\)"):
        ClipFolder(root, clipdfer.create_model("clipdfer_test"))


def test_train_and_eval_data_errors_name_the_layouts_and_what_was_found(tmp_path, capsys):
    from clipdfer.cli import main
    root = _layout(tmp_path / "data")
    train = os.path.join(root, "train")

    def error(command, data):
        assert main([command, "--model", "clipdfer_test", "--out", str(tmp_path / "run"), "--data", data,
                     "--device", "cpu", "--epochs", "1"][:-2 if command == "eval" else None]) == 2
        said = capsys.readouterr().err
        assert "annotation file " not in said.split("(an annotation file")[0], said  # the layouts first
        return said

    said = error("train", train)  # DIR/train given: class folders directly
    assert f"{train!r} is a split itself: give the folder that holds it, --data {root}" in said
    assert "expected " + os.path.join(train, "train", "<class>") in said and "DIR/test/<class>" in said
    said = error("train", str(tmp_path / "nowhere"))
    assert "nowhere' does not exist: expected" in said and "train.txt (an annotation file" in said
    classes = str(tmp_path / "data" / "test")
    os.rename(classes, tmp_path / "flat")
    said = error("train", str(tmp_path / "flat"))
    assert "holds calm/, joy/, pain/" in said and "if calm/, joy/, pain/ are classes, move them into" in said
    said = error("eval", root)  # no test/ left
    assert f"--data {root!r} has no test/ folder nor test.txt: it holds train/" in said
    assert "expected " + os.path.join(root, "test", "<class>") in said


def test_a_val_folder_is_the_validation_split(tmp_path, capsys):
    from clipdfer.cli import main
    root = _layout(tmp_path / "data", per_class=(1, 1))
    for label, name in enumerate(CLASSES):
        _frame_folder(tmp_path / "data" / "val" / name / "v0", _frames(label, seed=5))
        _frame_folder(tmp_path / "data" / "val" / name / "v1", _frames(label, seed=6))
    out = str(tmp_path / "run")
    assert main(["train", "--model", "clipdfer_test", "--data", root, "--out", out, "--epochs", "1",
                 "--batch-size", "2"]) == 0  # one training clip a class: no split of train/ could validate
    assert f"validation: the 6 clips of {root}/val (--val-fraction is not used)" in capsys.readouterr().out
    results = json.load(open(os.path.join(out, "results.json")))
    assert (results["train_clips"], results["selection_clips"], results["test_clips"]) == (3, 6, 3)
