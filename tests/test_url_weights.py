"""Weights at a URL (DFER-CLIP's official releases): download once, check, convert, cache; each failure explained.

A loopback HTTP server serves checkpoints in the official release format (``torch.save`` of the training state of a
``DataParallel`` model, with an object of the training script's class that must never be instantiated), built from
the tiny test model with random weights; Google Drive itself is never reached (its gdown path is scripted).
"""

import hashlib
import json
import logging
import os
import sys
import tempfile
import threading

import pytest
import torch

import clipdfer
from clipdfer.models import PretrainedWeightsError
from clipdfer.models._download import is_google_drive_url
from clipdfer.models._loading import url_cache_entry
from hub_server import FileServer
from test_dferclip import official_state_dict, save_official

_MARKER = os.path.join(tempfile.gettempdir(), f"clipdfer-recorder-ran-{os.getpid()}")


class Recorder:  # the official script pickles an object of its own class; restoring it must run nothing
    def __init__(self):
        self.epoch_accuracy = [[0.0, 0.0]]

    def __setstate__(self, state):
        open(_MARKER, "w").close()
        self.__dict__.update(state)


def _release_bytes(tmp_path, model, name="DFEW-set1-model_best.pth") -> bytes:
    path = tmp_path / name
    torch.save({"epoch": 30, "state_dict": official_state_dict(model), "best_acc": torch.tensor(55.0),
                "optimizer": {"state": {}, "param_groups": []}, "recorder": Recorder()}, str(path))
    return path.read_bytes()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No test here may reach past the loopback servers: any other connection fails at once (the official tags name
    Google Drive; only scripted stand-ins ever see those addresses)."""
    import socket
    connect = socket.socket.connect

    def loopback_connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test tried to connect to {address!r}: tests reach loopback servers only")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_connect)


@pytest.fixture
def release(hub, tmp_path):
    """``(server, source model, bytes)``: a file server online with a fresh cache, serving one official release."""
    source = clipdfer.create_model("dferclip_test").eval()
    data = _release_bytes(tmp_path, source)
    with FileServer() as server:
        server.files["DFEW-set1-model_best.pth"] = data
        yield server, source, data
    assert not os.path.exists(_MARKER), "an object of the training script was restored"


def _load(url, **overlay):
    return clipdfer.create_model("dferclip_test", pretrained=True, pretrained_cfg_overlay=dict(url=url, **overlay))


def _logits(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.pretrained_cfg
    with torch.no_grad():
        return model.eval()(torch.rand(2, cfg.num_frames, *cfg.input_size, generator=g))


def _entries():
    from huggingface_hub import constants
    root = os.path.join(constants.HF_HUB_CACHE, "clipdfer-url")
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def test_release_is_downloaded_once_converted_cached_and_equal_to_checkpoint_path(
        release, tmp_path, caplog, monkeypatch):
    server, source, data = release
    url = server.url("DFEW-set1-model_best.pth")
    conversions = []
    read = clipdfer.models.dferclip.read_release
    monkeypatch.setattr(clipdfer.models.dferclip, "read_release", lambda *a: conversions.append(a) or read(*a))
    with caplog.at_level(logging.WARNING, logger="clipdfer"):
        model = _load(url, finetuned=True, notes="Trained on DFEW: non-commercial research only.")
    assert server.count() == 1 and len(conversions) == 1
    local = tmp_path / "DFEW-set1-model_best.pth"  # the same file, through checkpoint_path
    expected = clipdfer.create_model("dferclip_test", checkpoint_path=str(local))
    assert torch.equal(_logits(model), _logits(expected))
    assert torch.equal(_logits(model), _logits(source))
    assert model.weights == "finetuned"
    # the first download says what was downloaded, under which licence and data terms
    log = " ".join(r.getMessage() for r in caplog.records)
    assert url in log and hashlib.sha256(data).hexdigest() in log and "non-commercial research only" in log

    entry = url_cache_entry(model.pretrained_cfg)
    config = json.loads(open(os.path.join(entry, "config.json")).read())
    assert config["source"] == {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert config["weights"] == "finetuned" and config["label_names"] == list(clipdfer.data.DFEW_CLASSES)
    assert sorted(os.listdir(entry)) == ["config.json", "model.safetensors"]
    assert _entries() == [os.path.basename(entry), os.path.basename(entry) + ".lock"]  # no temporary left
    # the cache entry is a local-dir model
    assert torch.equal(_logits(clipdfer.create_model("local-dir:" + entry)), _logits(source))

    # a second call neither downloads nor converts; the cache serves with the server stopped and offline
    again = _load(url)
    assert server.count() == 1 and len(conversions) == 1 and torch.equal(_logits(again), _logits(source))
    server.__exit__(None, None, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(_logits(_load(url)), _logits(source))
    server.__enter__()  # the fixture stops it again


def test_offline_without_a_cached_copy_names_the_url_the_cache_and_the_manual_route(release, monkeypatch):
    server, _, _ = release
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = server.url("DFEW-set1-model_best.pth")
    with pytest.raises(PretrainedWeightsError) as e:
        _load(url)
    msg = str(e.value)
    assert "offline mode is on (HF_HUB_OFFLINE)" in msg and url in msg and "clipdfer-url" in msg
    assert "checkpoint_path='FILE'" in msg and "clipdfer convert dferclip FILE OUT_DIR" in msg
    assert server.count() == 0


_DRIVE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
               b"<p>Too many users have viewed or downloaded this file recently.</p></body></html>")


def test_an_html_page_is_refused_and_nothing_is_cached(release):
    server, _, _ = release
    server.files["quota"] = _DRIVE_PAGE
    with pytest.raises(PretrainedWeightsError, match="gave an HTML page \\('Google Drive - Quota exceeded'\\)"):
        _load(server.url("quota"))
    server.files["empty.pth"] = b""
    with pytest.raises(PretrainedWeightsError, match="gave an empty response \\(0 bytes\\).*URL is probably wrong"):
        _load(server.url("empty.pth"))
    assert not any(not e.endswith(".lock") for e in _entries())


def test_an_interrupted_transfer_is_refused_and_no_partial_file_is_kept(release):
    server, source, data = release
    server.truncate["DFEW-set1-model_best.pth"] = len(data) // 2
    with pytest.raises(PretrainedWeightsError, match="(?is)failed.*incomplete.*Nothing was cached"):
        _load(server.url("DFEW-set1-model_best.pth"))
    assert not any(not e.endswith(".lock") for e in _entries())
    del server.truncate["DFEW-set1-model_best.pth"]  # a retry succeeds
    assert torch.equal(_logits(_load(server.url("DFEW-set1-model_best.pth"))), _logits(source))


def test_a_truncated_file_is_refused(release):
    server, _, data = release
    server.files["cut.pth"] = data[: len(data) * 2 // 3]  # served whole: the file itself is cut
    with pytest.raises(PretrainedWeightsError, match="is not the weights of dferclip_test.*truncated"):
        _load(server.url("cut.pth"))
    assert not any(not e.endswith(".lock") for e in _entries())


def test_another_datasets_release_is_refused(release, tmp_path):
    server, _, _ = release
    mafw = clipdfer.create_model("dferclip_test", class_names=clipdfer.data.MAFW_CLASSES)
    server.files["model_best.pth"] = _release_bytes(tmp_path, mafw, "mafw.pth")  # its name does not say: its classes do
    with pytest.raises(PretrainedWeightsError, match="checkpoint for 11 classes .*is for 7.*another dataset's release"
                       ) as e:
        _load(server.url("model_best.pth"))
    assert "truncated" not in str(e.value) and "dferclip_test is for 7" in str(e.value)


def test_a_release_trained_with_other_class_texts_is_refused(release, tmp_path):
    server, _, _ = release
    other = clipdfer.create_model("dferclip_test", text_type="class_names")
    server.files["names.pth"] = _release_bytes(tmp_path, other, "names.pth")
    with pytest.raises(ValueError, match="other class texts.*text_type='class_names'"):
        _load(server.url("names.pth"))
    model = clipdfer.create_model("dferclip_test", text_type="class_names", pretrained=True,
                                  pretrained_cfg_overlay=dict(url=server.url("names.pth")))
    assert server.count("names.pth") == 1  # the converted release was cached by the first call
    assert torch.equal(_logits(model), _logits(other))


def test_a_sha256_that_differs_is_refused(release):
    server, _, data = release
    with pytest.raises(PretrainedWeightsError, match=f"sha256 {hashlib.sha256(data).hexdigest()}.*expects 0000"):
        _load(server.url("DFEW-set1-model_best.pth"), url_sha256="0" * 64)
    model = _load(server.url("DFEW-set1-model_best.pth"), url_sha256=hashlib.sha256(data).hexdigest())
    assert model.weights in ("finetuned", "pretrained")


def test_concurrent_loads_download_once(release):
    server, source, _ = release
    url = server.url("DFEW-set1-model_best.pth")
    results, errors = [], []

    def load():
        try:
            results.append(_logits(_load(url)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and server.count() == 1
    assert all(torch.equal(r, _logits(source)) for r in results)


def test_without_gdown_the_error_names_the_extra(release, monkeypatch):
    server, _, _ = release
    monkeypatch.setitem(sys.modules, "gdown", None)
    with pytest.raises(PretrainedWeightsError, match="pip install 'clipdfer\\[download\\]'"):
        _load(server.url("DFEW-set1-model_best.pth"))


def test_google_drive_links_go_through_gdown_and_its_refusals_are_explained(release, monkeypatch):
    gdown = pytest.importorskip("gdown")
    from gdown.exceptions import FileURLRetrievalError
    _, _, data = release
    calls = []

    def scripted(url, output=None, quiet=False, fuzzy=False):  # gdown 5's signature; Drive is not reachable here
        calls.append((url, fuzzy))
        if len(calls) == 1:
            raise FileURLRetrievalError("Too many users have viewed or downloaded this file recently.")
        assert output.endswith(os.sep)  # a directory: gdown names the file as Drive does
        path = os.path.join(output, "DFEW-set1-model_best.pth")
        with open(path, "wb") as f:
            f.write(data)
        return path

    monkeypatch.setattr(gdown, "download", scripted)
    drive = clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew.dfew_fold1").url  # only the scripted gdown sees it
    with pytest.raises(PretrainedWeightsError, match="(?s)Too many users.*daily download quota.*checkpoint_path"):
        _load(drive)
    model = _load(drive, finetuned=True)
    # gdown < 6 reads a Drive viewer link only with fuzzy=True (gdown 6 has no such argument and is not given it)
    assert calls == [(drive, True), (drive, True)] and model.weights == "finetuned"
    config = json.loads(open(os.path.join(url_cache_entry(model.pretrained_cfg), "config.json")).read())
    assert "DFEW-set1-model_best.pth" in config["pretrained_cfg"]["notes"]  # the release's own name is recorded


def test_the_hub_copy_comes_first_and_the_url_is_the_fallback(release, hub, tmp_path, caplog):
    server, source, _ = release
    url = server.url("DFEW-set1-model_best.pth")
    mirror = clipdfer.create_model("dferclip_test")  # other weights, so the two sources can be told apart
    mirror.save_pretrained(str(tmp_path / "mirror"), finetuned=True)
    weights = (tmp_path / "mirror" / "model.safetensors").read_bytes()
    hub.commit("clipdfer/dferclip-test", {"model.safetensors": weights})
    both = dict(hf_hub_id="clipdfer/dferclip-test", url=url, checkpoint_format="clipdfer")
    model = clipdfer.create_model("dferclip_test", pretrained=True, pretrained_cfg_overlay=both)
    assert torch.equal(_logits(model), _logits(mirror)) and server.count() == 0
    with caplog.at_level(logging.WARNING, logger="clipdfer"):
        model = clipdfer.create_model("dferclip_test", pretrained=True,
                                      pretrained_cfg_overlay=dict(both, hf_hub_id="clipdfer/missing"))
    assert torch.equal(_logits(model), _logits(source)) and server.count() == 1
    assert any("the Hub copy cannot be had" in r.getMessage() for r in caplog.records)


def test_official_tags_name_their_release_url_licence_and_data_terms(monkeypatch):
    for name in clipdfer.list_pretrained("dferclip_vitb32_*"):
        cfg = clipdfer.get_pretrained_cfg(name)
        if name.endswith(".openai"):
            continue
        assert is_google_drive_url(cfg.url) and "/file/d/" in cfg.url and cfg.finetuned and cfg.license == "mit"
        assert cfg.num_frames == 16 and cfg.mean == (0.0, 0.0, 0.0) and cfg.std == (1.0, 1.0, 1.0)
        assert "non-commercial research only" in cfg.notes and cfg.dataset.upper() in cfg.notes
    assert clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew").tag == "dfew_fold1"  # the default is fine-tuned
    with torch.device("meta"):  # offline (the tests' default) and nothing cached: the error says what to do
        with pytest.raises(PretrainedWeightsError, match="(?s)drive.google.com.*clipdfer convert dferclip"):
            clipdfer.create_model("dferclip_vitb32_dfew.dfew_fold3", pretrained=True)


def test_a_state_dict_in_the_cfg_comes_first():
    source = clipdfer.create_model("dferclip_test")
    overlay = dict(state_dict=source.state_dict(), url="http://127.0.0.1:9/x")
    model = clipdfer.create_model("dferclip_test", pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(_logits(model), _logits(source))
    assert "state_dict" not in model.pretrained_cfg.to_dict()


def test_convert_push_to_hub_publishes_the_release_with_its_card(tmp_path, hub_uploads, capsys):
    """`clipdfer convert dferclip FILE OUT --push-to-hub ORG/NAME`: the converted files as they are, and a card with
    the licence, the source file and its sha256, the data terms, the paper's metrics, the label order and the
    preprocessing (issue 20, item 3). The Hub's upload API is recorded, not reached."""
    from clipdfer.cli import main
    uploaded = hub_uploads
    source = clipdfer.create_model("dferclip_test")
    data = _release_bytes(tmp_path, source, "FERV39k-model_best.pth")
    out = tmp_path / "converted"
    assert main(["convert", "dferclip", str(tmp_path / "FERV39k-model_best.pth"), str(out),
                 "--release", "dferclip_vitb32_ferv39k.ferv39k", "--push-to-hub", "me/dferclip-ferv39k"]) == 0
    assert uploaded["created"] == ("me/dferclip-ferv39k", None, True)
    files = uploaded["files"]
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    assert files["config.json"] == (out / "config.json").read_bytes()  # the converted files as they are
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    sha = hashlib.sha256(data).hexdigest()
    release_url = clipdfer.get_pretrained_cfg("dferclip_vitb32_ferv39k.ferv39k").url  # named in the card, not reached
    for needle in ("license: mit", "github.com/zengqunzhao/DFER-CLIP", f"sha256 `{sha}`", "FERV39k-model_best.pth",
                   "non-commercial research only", release_url, "arxiv.org/abs/2308.13382",
                   "| uar | 41.27 |", "not measured by clipdfer", "| 0 | happiness |", "| 6 | fear |",
                   "16 frames per clip", "(bilinear)", "mean [0.0, 0.0, 0.0]", "fine-tuned, on ferv39k",
                   'create_model("hf-hub:me/dferclip-ferv39k", pretrained=True)'):
        assert needle in card, needle
    assert "uploaded to me/dferclip-ferv39k" in capsys.readouterr().out


def test_fold_releases_are_never_evaluated_or_trained_across_folds(monkeypatch, tmp_path, caplog, capsys):
    """A DFEW fold's release was trained on the other folds' test clips: eval refuses it on another fold, evaluates
    each fold's own release with '{fold}' in the model name, and train --pretrained on an untagged architecture starts
    from the initialisation, not from the default fine-tuned release."""
    from clipdfer import eval as clipdfer_eval
    from clipdfer.train import starting_weights
    with pytest.raises(ValueError, match="fine-tuned for fold 1 .*evaluated on fold 2.*dfew_fold\\{fold\\}"):
        clipdfer_eval.main(["--model", "dferclip_vitb32_dfew", "--pretrained", "--synthetic", "--folds", "1-5",
                            "--out", str(tmp_path / "a")])
    loaded = []

    def load(name, checkpoint, pretrained):
        loaded.append((name, pretrained))
        return clipdfer.create_model("dferclip_test")

    monkeypatch.setattr(clipdfer_eval, "load_for_eval", load)
    assert clipdfer_eval.main(["--model", "dferclip_vitb32_dfew.dfew_fold{fold}", "--pretrained", "--synthetic",
                               "--synthetic-size", "4", "--folds", "1-2", "--out", str(tmp_path / "b")]) == 0
    assert loaded == [("dferclip_vitb32_dfew.dfew_fold1", True), ("dferclip_vitb32_dfew.dfew_fold2", True)]
    from clipdfer.cli import main
    with pytest.raises(SystemExit):  # {fold} without folds to fill it with: argparse's usage error
        main(["eval", "--model", "dferclip_vitb32_dfew.dfew_fold{fold}", "--pretrained", "--synthetic"])
    assert "contain(s) {fold}: give the folds to fill it with, e.g. --folds 1-5" in capsys.readouterr().err
    assert main(["eval", "--model", "dferclip_vitb32_dfew", "--pretrained", "--synthetic", "--folds", "1-2",
                 "--out", str(tmp_path / "c")]) == 2  # through the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("clipdfer: error: dferclip_vitb32_dfew holds the weights fine-tuned for fold 1")
    # a converted release is the same release: refused on another fold too, through local-dir: or --checkpoint
    save_official(clipdfer.create_model("dferclip_test"), str(tmp_path / "DFEW-2307-set2-model_best.pth"))
    assert main(["convert", "dferclip", str(tmp_path / "DFEW-2307-set2-model_best.pth"), str(tmp_path / "f2")]) == 0
    capsys.readouterr()
    for route in (["--model", f"local-dir:{tmp_path / 'f2'}"],
                  ["--model", "dferclip_test", "--checkpoint", str(tmp_path / "f2")],
                  ["--model", "dferclip_test", "--checkpoint", str(tmp_path / "f2" / "model.safetensors")]):
        assert main(["eval", *route, "--synthetic", "--folds", "1", "--out", str(tmp_path / "d")]) == 2, route
        assert "fine-tuned for fold 2" in capsys.readouterr().err
    assert main(["eval", "--model", f"local-dir:{tmp_path / 'f2'}", "--synthetic", "--synthetic-size", "4",
                 "--folds", "2", "--out", str(tmp_path / "e")]) == 0
    assert starting_weights("dferclip_vitb32_dfew") == "dferclip_vitb32_dfew.openai"
    assert starting_weights("clipdfer_vitb32_dfew") == "clipdfer_vitb32_dfew.openai"
    assert starting_weights("local-dir:runs/x") == "local-dir:runs/x"
    with caplog.at_level(logging.WARNING, logger="clipdfer"):
        assert starting_weights("dferclip_vitb32_mafw.mafw_fold2") == "dferclip_vitb32_mafw.mafw_fold2"
    assert "already fine-tuned on mafw" in caplog.text


def test_train_pretrained_starts_from_the_initialisation(monkeypatch, tmp_path):
    from clipdfer import train as clipdfer_train
    seen = []

    def create_model(source, **kwargs):
        seen.append((source, kwargs.get("pretrained")))
        raise RuntimeError("built")  # the model itself is not the point

    monkeypatch.setattr(clipdfer_train, "create_model", create_model)  # train imports it from clipdfer.models
    cfg = clipdfer_train.TrainConfig(model="dferclip_vitb32_dfew", pretrained=True, synthetic=True,
                                     out=str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="built"):
        clipdfer_train.train(cfg)
    assert seen == [("dferclip_vitb32_dfew.openai", True)]


def test_any_family_loads_a_state_dict_file_at_a_url(hub, tmp_path):
    """Outside DFER-CLIP's release format, a URL serves a state dict file (here one save_pretrained wrote): cached as
    safetensors with its recorded weights state, logits equal to the source."""
    source = clipdfer.create_model("clipdfer_test").eval()
    source.save_pretrained(str(tmp_path / "saved"), finetuned=True)
    with FileServer() as server:
        server.files["w.safetensors"] = (tmp_path / "saved" / "model.safetensors").read_bytes()
        model = clipdfer.create_model("clipdfer_test", pretrained=True,
                                      pretrained_cfg_overlay=dict(url=server.url("w.safetensors")))
        assert server.count() == 1
    assert torch.equal(_logits(model), _logits(source)) and model.weights == "finetuned"


def test_a_pinned_sha256_is_checked_against_the_cache_too(release, monkeypatch):
    server, source, data = release
    url = server.url("DFEW-set1-model_best.pth")
    _load(url)
    with pytest.raises(PretrainedWeightsError, match="expects 0000"):  # a cached copy of another file is not used
        _load(url, url_sha256="0" * 64)
    assert server.count() == 2
    model = _load(url, url_sha256=" " + hashlib.sha256(data).hexdigest().upper() + "\n")  # as sha256sum prints it
    assert server.count() == 2 and torch.equal(_logits(model), _logits(source))
    with pytest.raises(ValueError, match="url_sha256='abc': expected the file's sha256 as 64 hex digits"):
        _load(url, url_sha256="abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError, match="only as made from a file of sha256 .*not the pinned 1111"):
        _load(url, url_sha256="1" * 64)


def test_a_file_named_as_another_release_is_refused(release, tmp_path):
    server, source, data = release
    server.files["DFEW-2307-set2-model_best.pth"] = data
    server.files["FERV39K-2307-set1-model_best.pth"] = data
    source.save_pretrained(str(tmp_path / "saved"))  # any format: a safetensors file named as fold 2's release
    server.files["DFEW-set2-model.safetensors"] = (tmp_path / "saved" / "model.safetensors").read_bytes()
    fold1 = dict(dataset="dfew", tag="dfew_fold1")
    with pytest.raises(PretrainedWeightsError, match="a DFEW fold 2 release, but dferclip_test.dfew_fold1"):
        _load(server.url("DFEW-set2-model.safetensors"), **fold1)
    with pytest.raises(PretrainedWeightsError, match="named 'DFEW-2307-set2-model_best.pth', a DFEW fold 2 release, "
                                                     "but dferclip_test.dfew_fold1 is DFEW fold 1"):
        _load(server.url("DFEW-2307-set2-model_best.pth"), **fold1)
    with pytest.raises(PretrainedWeightsError, match="a FERV39K release, but dferclip_test.dfew_fold1 is DFEW"):
        _load(server.url("FERV39K-2307-set1-model_best.pth"), **fold1)
    assert torch.equal(_logits(_load(server.url("DFEW-set1-model_best.pth"), **fold1)), _logits(source))


def test_a_mirror_of_converted_weights_loads_and_keeps_its_class_texts(release, hub, tmp_path):
    """A safetensors file (a mirror of a converted release) at the URL or on the Hub loads; weights whose
    class-specific contexts were trained with other class texts are refused whichever route they come by."""
    server, source, _ = release
    source.save_pretrained(str(tmp_path / "same"), finetuned=True)
    server.files["model.safetensors"] = (tmp_path / "same" / "model.safetensors").read_bytes()
    assert torch.equal(_logits(_load(server.url("model.safetensors"))), _logits(source))

    other = clipdfer.create_model("dferclip_test", text_type="class_names")
    other.save_pretrained(str(tmp_path / "other"), finetuned=True)
    weights = str(tmp_path / "other" / "model.safetensors")
    hub.commit("me/names", {"model.safetensors": open(weights, "rb").read()})
    server.files["names.safetensors"] = open(weights, "rb").read()
    for route in (dict(pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="me/names")),
                  dict(pretrained=True, pretrained_cfg_overlay=dict(url=server.url("names.safetensors"))),
                  dict(checkpoint_path=weights)):
        with pytest.raises(ValueError, match="other class texts.*class-specific: build the model with "
                                             "text_type='class_names'"):
            clipdfer.create_model("dferclip_test", **route)
    model = clipdfer.create_model("dferclip_test", text_type="class_names", checkpoint_path=weights)
    assert torch.equal(_logits(model), _logits(other))
    shared = clipdfer.create_model("dferclip_test", class_specific_contexts=False)  # shared contexts carry over
    shared.save_pretrained(str(tmp_path / "shared"))
    clipdfer.create_model("dferclip_test", class_specific_contexts=False, text_type="class_names",
                          checkpoint_path=str(tmp_path / "shared" / "model.safetensors"))


def test_an_unwritable_cache_and_a_killed_download_are_handled(release, tmp_path):
    server, source, _ = release
    (tmp_path / "a-file").write_text("not a directory")
    url = server.url("DFEW-set1-model_best.pth")
    with pytest.raises(PretrainedWeightsError, match="cannot write the cache .*a-file.*Point cache_dir="):
        clipdfer.create_model("dferclip_test", pretrained=True, cache_dir=str(tmp_path / "a-file" / "cache"),
                              pretrained_cfg_overlay=dict(url=url))
    entry = url_cache_entry(clipdfer.create_model("dferclip_test", pretrained_cfg_overlay=dict(url=url)).pretrained_cfg)
    stale = os.path.join(os.path.dirname(entry), f".tmp-{os.path.basename(entry)}-killed")
    os.makedirs(os.path.join(stale, "download"))  # what a download killed with SIGKILL leaves
    open(os.path.join(stale, "download", "x.pth.part"), "wb").close()
    assert torch.equal(_logits(_load(url)), _logits(source))
    assert not os.path.exists(stale) and sorted(os.listdir(os.path.dirname(entry))) == sorted(
        [os.path.basename(entry), os.path.basename(entry) + ".lock"])


_OPENED = []  # files created or truncated while a test records them (after its "on" marker)


def _record_writes(event, args):
    if event == "open" and _OPENED[:1] == ["on"]:
        path, mode, flags = args
        if (mode and any(c in mode for c in "wxa")) or (mode is None and flags & (os.O_CREAT | os.O_TRUNC)):
            _OPENED.append(path)


sys.addaudithook(_record_writes)  # audit hooks stay for the process: it records only while the marker is there


def test_a_first_load_builds_one_model_and_writes_each_file_once(release, monkeypatch):
    """Issue 26: loading runs one way. The first load of a release URL builds the one model create_model returns (no
    second model to convert with) and writes the cache's config.json and model.safetensors once each."""
    import safetensors.torch
    server, source, _ = release
    built, saved = [], []
    init = clipdfer.models.DFERModel.__init__
    monkeypatch.setattr(clipdfer.models.DFERModel, "__init__",
                        lambda self, *a, **k: built.append(type(self).__name__) or init(self, *a, **k))
    save_file = safetensors.torch.save_file
    monkeypatch.setattr(safetensors.torch, "save_file",
                        lambda tensors, path, metadata=None: saved.append(path) or save_file(tensors, path, metadata))
    _OPENED[:] = ["on"]
    try:
        model = _load(server.url("DFEW-set1-model_best.pth"))
    finally:
        opened, _OPENED[:] = _OPENED[1:], []
    assert built == ["DFERCLIP"] and server.count() == 1
    assert len(saved) == 1 and len({p for p in opened if "config.json" in os.path.basename(str(p))}) == 1, opened
    entry = url_cache_entry(model.pretrained_cfg)
    assert sorted(os.listdir(entry)) == ["config.json", "model.safetensors"]
    assert torch.equal(_logits(model), _logits(source))
