"""The manifest's sha256 of each graph is checked when the graph is opened (runtime/core/manifest.py): a graph
copied in from another export, or damaged, is named instead of run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fomm_deploy.runtime.core.errors import ExportFolderError
from fomm_deploy.runtime.core.manifest import Manifest
from fomm_deploy.runtime.graphs import load_exported, open_animator
from tests import media_corpus as mc


def _other_weights(path: Path) -> None:
    """Rewrite an ONNX graph with one weight changed: a graph of the same contract from another export, which
    ONNX Runtime loads and runs without a word."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(init).copy()
    values.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(path))


@pytest.fixture
def export_copy(golden_export, tmp_path):
    folder = tmp_path / "exported"
    shutil.copytree(golden_export, folder, ignore=shutil.ignore_patterns("engines"))
    return folder


def test_a_graph_from_another_export_is_named(export_copy):
    open_animator(load_exported(export_copy))  # the copy as written loads
    _other_weights(export_copy / "generator_frame.onnx")
    exported = load_exported(export_copy)
    with pytest.raises(ExportFolderError, match=r"generator_frame.onnx is not the graph this export wrote: its "
                                                r"sha256 is [0-9a-f]{12}\.\.\., manifest.json records"):
        open_animator(exported)
    open_animator(exported, split=False)  # the graphs it does not open are not its business
    _other_weights(export_copy / "generator.fp16.onnx")
    with pytest.raises(ExportFolderError, match="generator.fp16.onnx is not the graph"):
        open_animator(exported, precision="fp16", split=False)


def test_fomm_animate_names_the_graph_in_one_line(export_copy, tmp_path):
    _other_weights(export_copy / "kp_detector.onnx")
    clip = mc.astronaut_clip(tmp_path / "driving.mp4", frames=10)
    res = subprocess.run([str(Path(sys.executable).parent / "fomm-animate"), "--source", str(mc.ASTRONAUT),
                          "--driving", str(clip), "--out", "out.mp4", "--onnx", str(export_copy), "--crop", "centre"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "out.mp4").exists()
    assert res.stderr.startswith(f"Error: {export_copy / 'kp_detector.onnx'} is not the graph this export wrote")


def test_each_file_is_hashed_once_for_its_size_and_mtime(export_copy):
    manifest = Manifest.read(export_copy)
    path = manifest.verified_graph(export_copy, "kp_detector", "fp32")
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size; with its mtime put back, the file looks as it was when it was hashed
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manifest.verified_graph(export_copy, "kp_detector", "fp32") == path  # not hashed again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: hashed again
    with pytest.raises(ExportFolderError, match="kp_detector.onnx is not the graph"):
        manifest.verified_graph(export_copy, "kp_detector", "fp32")
