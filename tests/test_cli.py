"""The command line: every command in `clipdfer --help`, train's and eval's options from their modules, one line for
our errors (a traceback with -v), and bugs never turned into one line."""

import io
import json

import pytest

import clipdfer.cli.models
from clipdfer.cli import COMMANDS, main
from clipdfer.inference.outputs import ResultWriter


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and {"train", "eval"} <= set(COMMANDS)
    assert "{" + ",".join(COMMANDS) + "}" in out
    for name in COMMANDS:
        assert f"\n    {name} " in out, name


@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_and_eval_help_show_their_modules_options(command, capsys):
    import importlib
    parser = importlib.import_module(f"clipdfer.{command}").build_parser()
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"usage: clipdfer {command} ")
    options = [s for action in parser._actions for s in action.option_strings]
    assert {"--model", "--out", "--synthetic"} <= set(options)
    assert [s for s in options if s not in out] == []


def test_our_errors_are_one_line_and_a_traceback_with_verbose(tmp_path, capsys):
    args = ["prepare", "dfew", str(tmp_path / "nowhere"), str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("clipdfer: error: ") and "EmoLabel_DataSplit" in err and len(err.splitlines()) == 1
    assert main(["-v", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "FileNotFoundError: " in err
    assert "clipdfer: error" not in err
    assert main(["train", "--model", "clipdfer_test", "--out", str(tmp_path / "run")]) == 2  # train's own, too
    assert capsys.readouterr().err == ("clipdfer: error: no training data: pass --data DIR (with train/<class>/ and "
                                       "test/<class>/ folders, or train.txt and test.txt), --train-list, or "
                                       "--synthetic\n")


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_bug_keeps_its_traceback(verbose, monkeypatch, capsys):
    def run(args):
        raise TypeError("a bug of ours")

    monkeypatch.setattr(clipdfer.cli.models, "run", run)
    with pytest.raises(TypeError, match="a bug of ours"):
        main([*verbose, "models"])
    assert "clipdfer: error" not in capsys.readouterr().err


def test_result_writer_formats():
    entry = {"source": "a.mp4", "faces": [{"id": 1, "windows": [
        {"start": 0.0, "end": 0.5, "start_frame": 0, "end_frame": 3, "probs": {"happy": 0.75, "sad": 0.25}}]}]}
    failed = {"source": "b.mp4", "error": "no face found", "error_type": "NoFaceError"}
    outputs = {}
    for fmt in ("json", "csv"):
        for entries in ([], [entry, failed]):
            out = io.StringIO()
            writer = ResultWriter(out, fmt, ["happy", "sad"])
            for e in entries:
                writer.add(e)
            writer.close()
            outputs[fmt, len(entries)] = out.getvalue()
    assert outputs["json", 0] == "[]\n" and json.loads(outputs["json", 2]) == [entry, failed]
    header = "source,face_id,start_frame,end_frame,start_s,end_s,happy,sad\r\n"
    assert outputs["csv", 0] == header and outputs["csv", 2] == header + "a.mp4,1,0,3,0.000,0.500,0.7500,0.2500\r\n"
    with pytest.raises(ValueError, match="expected one of text, json, jsonl, csv"):
        ResultWriter(io.StringIO(), "yaml", [])
