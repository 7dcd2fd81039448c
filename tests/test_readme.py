"""Every Python example in README.md runs, and .ci/run reads the set-up commands the README shows."""

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _sessions(text: str):
    """(index of the first block, code) per example: a block that starts with ``# continued`` runs after the blocks
    before it, in their session (a tutorial in steps)."""
    sessions = []
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
        if code.startswith("# continued") and sessions:
            sessions[-1] = (sessions[-1][0], sessions[-1][1] + code)
        else:
            sessions.append((i, code))
    return sessions


DOC_EXAMPLES = [(path.relative_to(ROOT).as_posix(), i, code) for path in sorted((ROOT / "docs").rglob("*.md"))
                for i, code in _sessions(path.read_text())]


# modules of optional extras whose examples are about them (the demo's page and client)
OPTIONAL = {"gradio": "pip install 'clipdfer[demo]'", "gradio_client": "pip install 'clipdfer[test]'"}


def test_readme_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("path,index,code", DOC_EXAMPLES, ids=[f"{p}:{i}" for p, i, _ in DOC_EXAMPLES])
def test_docs_example_runs(path, index, code, tmp_path, monkeypatch):
    if code.startswith("# needs:"):  # an example that needs files we cannot ship (e.g. official checkpoints)
        pytest.skip(code.splitlines()[0])
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"{path} example {index}", "exec"), {"__name__": "__docs__"})
    except ModuleNotFoundError as e:
        if e.name not in OPTIONAL:
            raise
        pytest.skip(f"{path}'s example needs {e.name}: {OPTIONAL[e.name]}")


def test_a_tutorial_in_steps_runs_as_one_session():
    text = "```python\nx = 1\n```\ntext\n```python\n# continued\nx += 1\n```\n```python\ny = 0\n```\n"
    assert _sessions(text) == [(0, "x = 1\n# continued\nx += 1\n"), (2, "y = 0\n")]
    tutorial = [code for path, _, code in DOC_EXAMPLES if path == "docs/finetuning.md" and "ClipFolder" in code]
    assert len(tutorial) == 1 and all(step in tutorial[0] for step in (
        "ClipFolder(", "training_losses", "evaluate(", "save_pretrained(", "clipdfer.predict("))


def test_ci_runs_the_readme_commands():
    script = (
        "awk '/<!-- ci:commands/ {found=1; next} found && /^```bash/ {inside=1; next} inside && /^```/ {exit} "
        "inside {print}' README.md")
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert "pip install" in lines[0] and "clipdfer predict --sample" in lines[0]
    assert "pytest" in lines[1]
    assert "<!-- ci:commands" in (ROOT / ".ci" / "run").read_text()


def test_cli_quickstart_on_tiny_model(capsys):
    from clipdfer.cli import main
    assert main(["quickstart", "--model", "clipdfer_test"]) == 0
    out = capsys.readouterr().out
    assert "class probabilities" in out and "NOTICE" in out and "happiness" in out
    assert main(["models", "clipdfer_vitb32_*"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == ["clipdfer_vitb32_dfew", "clipdfer_vitb32_ferv39k", "clipdfer_vitb32_mafw"]
