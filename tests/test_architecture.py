"""The import rules of docs/architecture.md, read from the source (imports inside functions count too)."""

import ast
import importlib
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clipdfer")

# top-level layers, lowest first (docs/architecture.md); a module may import its own layer and the ones before it
LAYERS = [
    ("clipdfer.version", "clipdfer._files", "clipdfer._safe_load"),
    ("clipdfer.layers",),
    ("clipdfer.data", "clipdfer.faces"),
    ("clipdfer.models",),
    ("clipdfer.optim", "clipdfer.recipes", "clipdfer.schedule", "clipdfer.checkpoint", "clipdfer.distributed",
     "clipdfer.metrics", "clipdfer.eval", "clipdfer.train"),
    ("clipdfer.inference", "clipdfer.visualize"),
    ("clipdfer.convert", "clipdfer.export", "clipdfer.profiling", "clipdfer.demo", "clipdfer.app"),
    ("clipdfer.cli", "clipdfer.__main__"),
]
# inside clipdfer.models: cfgs <- registry <- download <- loading <- saving <- base <- builder <- families <- factory
MODELS = ["_pretrained", "_registry", "_download", "_loading", "_hub", "_base", "_builder", "dferclip_official",
          ("a3lign", "baselines", "clipdfer", "dferclip", "pmfer"), "_factory", ""]


def _modules():
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports():
    """module -> the clipdfer modules it imports (``from .x import y`` counts as x.y when that is a module)."""
    modules, edges = _modules(), {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name not in modules and "." in name:
                    name = name.rpartition(".")[0]
                if name in modules and name != module and name.startswith("clipdfer"):
                    found.add(name)
        if "importlib.import_module" in open(path, encoding="utf-8").read():  # lazy imports, from the module's tables
            loaded = importlib.import_module(module)
            names = list(getattr(loaded, "_SUBMODULES", ())) + list(getattr(loaded, "COMMANDS", ()))
            names += list(getattr(loaded, "_EXPORTS", {}).values())
            found |= {f"{module}.{name}" for name in names if f"{module}.{name}" in modules}
        edges[module] = found
    return edges


EDGES = _imports()


def _rank(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{module} is in no layer of docs/architecture.md: add it there and here")


def test_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in EDGES[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in EDGES:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_nothing_below_the_root_imports_the_root_and_layers_import_downward():
    assert [m for m, targets in EDGES.items() if "clipdfer" in targets and m != "clipdfer"] == []
    upward = [(m, t) for m, targets in EDGES.items() if m != "clipdfer" for t in targets if _rank(t) > _rank(m)]
    assert upward == []


def test_models_import_nothing_above_them_and_load_one_way():
    above = ("clipdfer.convert", "clipdfer.inference", "clipdfer.cli", "clipdfer.train")
    assert [(m, t) for m, targets in EDGES.items() if m.startswith("clipdfer.models")
            for t in targets if t.startswith(above)] == []

    def position(module: str) -> int:
        name = module[len("clipdfer.models"):].lstrip(".")
        return next(i for i, entry in enumerate(MODELS) if name == entry or isinstance(entry, tuple) and name in entry)

    models = [m for m in EDGES if m == "clipdfer.models" or m.startswith("clipdfer.models.")]
    assert [(m, t) for m in models for t in EDGES[m] if t in models and position(t) >= position(m)] == []


@pytest.mark.parametrize("module,torch_free", [("clipdfer.convert", False), ("clipdfer.inference.settings", True),
                                               ("clipdfer.cli", True)])
def test_light_modules_import_no_family(module, torch_free):
    """`import clipdfer.convert` loads no model family; the settings and the CLI's entry load not even torch."""
    import subprocess
    import sys
    code = (f"import sys, {module}\n"
            f"loaded = [m for m in sys.modules if m.startswith('clipdfer.models') or {torch_free} and m == 'torch']\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_models_do_not_import_torch_dynamo_at_import():
    """torch._dynamo takes about a second to import: loaded by torch.compile (or a library that needs it), not by us."""
    import subprocess
    import sys
    code = "import sys, clipdfer.models, clipdfer.inference.predictor; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(ROOT)})
    assert out.stdout.strip() == "False", out.stderr
