"""The layers of the package, as the folders show them, and the one rule between them: a module imports only
from its own layer or the ones below, never from one above.

    runtime.core      errors, configs, contract, precision, manifest, comparison, feeds, keypoints, names,
                      CLI options, signals, CLI helpers
    runtime.media     video, images, face framing, sample clips
    training          the PyTorch model, checkpoints, fomm-train
    runtime.backends  ONNX Runtime, TensorRT, the torch reference (the only runtime module that reaches training)
    export            checkpoint -> verified graphs
    runtime (apps)    animator, graphs, fomm-animate, fomm-compare, fomm-live, fomm-serve
    benchmarks        fomm-bench, the GPU check, the load benchmark

Every import counts, the lazy ones inside functions too. On top of the order: the runtime never imports
``export``, and reaches ``training`` only from the torch backend, which runs the PyTorch model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOPS = ("runtime", "export", "training", "benchmarks")
LAYERS = ("runtime.core", "runtime.media", "training", "runtime.backends", "export", "runtime", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """The index in LAYERS of the most specific layer that holds ``module``."""
    best = max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len)
    return LAYERS.index(best)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of this project's modules in ``path``, relative ones resolved."""
    me = _module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("fomm_deploy."):
                target = node.module[len("fomm_deploy."):]
            else:
                continue
            if not node.module:  # from . import cuda: the names are modules of that package
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name[len("fomm_deploy."):]) for alias in node.names
                      if alias.name.startswith("fomm_deploy.")]
    return [(line, target) for line, target in found if target.split(".")[0] in TOPS]


def _violations(path: Path) -> list[str]:
    me = _module_name(path)
    bad = []
    for line, target in _imports(path):
        where = f"{path.relative_to(REPO)}:{line} imports {target}"
        if _layer(target) > _layer(me):
            bad.append(f"{where}, a layer above ({LAYERS[_layer(target)]} over {LAYERS[_layer(me)]})")
        elif me.startswith("runtime") and target.startswith("export"):
            bad.append(f"{where}: the runtime never imports the exporter")
        elif (me.startswith("runtime") and target.startswith("training")
              and me != "runtime.backends.torch_ref"):
            bad.append(f"{where}: only the torch backend reaches training/")
    return bad


def _sources() -> list[Path]:
    return sorted(p for top in TOPS for p in (REPO / top).rglob("*.py"))


def test_no_module_imports_from_a_layer_above():
    bad = [v for path in _sources() for v in _violations(path)]
    assert not bad, "\n".join(bad)


def test_every_module_is_seen_and_the_layers_are_real_folders():
    assert len(_sources()) > 60
    for layer in LAYERS:
        assert (REPO / Path(*layer.split("."))).is_dir(), layer
    # the foundation holds what the others build on
    for module in ("errors", "config", "contract", "manifest", "compare", "feeds", "keypoints", "names",
                   "options", "signals"):
        assert (REPO / "runtime" / "core" / f"{module}.py").is_file(), module
    for module in ("video", "preprocess", "framing"):
        assert (REPO / "runtime" / "media" / f"{module}.py").is_file(), module


@pytest.mark.parametrize("source, message", [
    ("from ..animator import Animator\n", "a layer above (runtime over runtime.core)"),
    ("from fomm_deploy.runtime.serve.app import create_app\n", "a layer above (runtime over runtime.core)"),
    ("def f():\n    from ..media.video import open_video\n", "a layer above (runtime.media over runtime.core)"),
    ("from fomm_deploy.export.fp16 import FP16_SCOPES\n", "a layer above (export over runtime.core)"),
    ("from fomm_deploy.training.checkpoint import load\n", "a layer above (training over runtime.core)"),
])
def test_the_rule_sees_an_upward_import_in_the_foundation(tmp_path, monkeypatch, source, message):
    """The checker itself: an upward import planted in a core module is reported, a lazy one too."""
    path = REPO / "runtime" / "core" / "_planted_for_the_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == path else _read(self, *a, **k))
    assert any(message in v for v in _violations(path)), _violations(path)


@pytest.mark.parametrize("module, source, message", [
    ("runtime/animate.py", "from fomm_deploy.export.exporter import run_export\n", "never imports the exporter"),
    ("runtime/graphs.py", "from fomm_deploy.training.checkpoint import load\n", "only the torch backend"),
    ("training/data.py", "from fomm_deploy.runtime.graphs import load_exported\n", "a layer above"),
])
def test_the_side_rules_are_seen(monkeypatch, module, source, message):
    path = REPO / module
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == path else _read(self, *a, **k))
    assert any(message in v for v in _violations(path)), _violations(path)


_read = Path.read_text
