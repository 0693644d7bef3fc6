"""fomm-export never replaces what it did not write, and an interrupted export leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fomm_deploy.export.publish import check_out_dir, prepare_out_dir, publish
from fomm_deploy.runtime.core.errors import ExportError

REPO = Path(__file__).resolve().parents[2]


def _export(*args, cwd, **kw):
    return subprocess.Popen([str(Path(sys.executable).parent / "fomm-export"), *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_force_never_deletes_a_users_folder(tmp_path, golden_dir):
    mine = tmp_path / "my photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    proc = _export("--ckpt", golden_dir / "checkpoint.pth.tar", "--config", "tiny-test", "--out", mine, "--force",
                   cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "has no manifest.json that lists its files (it holds holiday.jpg)" in err
    assert "Traceback" not in err
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    # A folder an earlier export wrote is replaced; one with an extra file of the user's is not.
    exported = _earlier_export(tmp_path / "exported")
    check_out_dir(exported, force=True)
    (exported / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        check_out_dir(exported, force=True)


def _earlier_export(folder: Path) -> Path:
    """What fomm-export and the TensorRT backends leave: the graphs its manifest lists, and the engine cache."""
    folder.mkdir()
    graphs = {"kp_detector": "kp_detector.onnx", "generator": "generator.onnx", "generator.fp16": "generator.fp16.onnx"}
    (folder / "manifest.json").write_text(json.dumps({"format": "fomm-deploy-manifest/2",
                                                      "graphs": {k: {"file": f} for k, f in graphs.items()}}))
    for name in graphs.values():
        (folder / name).write_bytes(b"old graph")
    engines = folder / "engines"
    (engines / "ort-tensorrt" / "ort1.20-generator-0123456789abcdef").mkdir(parents=True)
    (engines / "generator.fp16.0123abcd.engine").write_bytes(b"engine")
    (engines / "generator.fp16.0123abcd.lock").write_bytes(b"")
    (engines / "timing.trt10.9.NVIDIA-H100.sm90.cache").write_bytes(b"timing")
    (engines / "ort-tensorrt" / "ort1.20-generator-0123456789abcdef" / "TRTKernel_graph_sm90.engine").write_bytes(b"e")
    return folder


def test_force_replaces_only_what_the_manifest_lists(tmp_path):
    """The check looked at names only: a folder that also held the user's yolo.onnx, resnet.onnx and
    engines/holiday.jpg was replaced, and they were lost. --force now replaces what the manifest lists (and the
    engine cache); anything else makes it refuse, naming it, and nothing is touched."""
    exported = _earlier_export(tmp_path / "exported")
    check_out_dir(exported, force=True)
    before = sorted(p.relative_to(exported) for p in exported.rglob("*"))
    (exported / "yolo.onnx").write_bytes(b"someone's model")
    (exported / "resnet.onnx").write_bytes(b"another one")
    (exported / "engines" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ExportError, match=r"also holds other files \(engines/holiday.jpg, resnet.onnx, yolo.onnx\)"):
        check_out_dir(exported, force=True)
    (exported / "engines" / "holiday.jpg").unlink()
    (exported / "engines" / "photos").mkdir()  # a folder of the user's in the engine cache
    with pytest.raises(ExportError, match=r"\(engines/photos/, resnet.onnx, yolo.onnx\)"):
        check_out_dir(exported, force=True)
    (exported / "engines" / "photos").rmdir()
    (exported / "yolo.onnx").unlink()
    (exported / "resnet.onnx").unlink()
    assert sorted(p.relative_to(exported) for p in exported.rglob("*")) == before
    # A manifest that cannot be read lists nothing: nothing in the folder is known to be an export's.
    (exported / "manifest.json").write_text("{")
    with pytest.raises(ExportError, match="has no manifest.json that lists its files"):
        check_out_dir(exported, force=True)


def test_force_through_the_command_keeps_the_users_files(tmp_path, golden_dir):
    exported = _earlier_export(tmp_path / "exported")
    (exported / "yolo.onnx").write_bytes(b"someone's model")
    (exported / "engines" / "holiday.jpg").write_bytes(b"precious")
    proc = _export("--ckpt", golden_dir / "checkpoint.pth.tar", "--config", "tiny-test", "--out", exported,
                   "--force", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.startswith("Error: --force replaces only what an earlier fomm-export wrote") and "yolo.onnx" in err
    assert (exported / "yolo.onnx").read_bytes() == b"someone's model"
    assert (exported / "engines" / "holiday.jpg").read_bytes() == b"precious"
    assert (exported / "generator.onnx").read_bytes() == b"old graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_a_file_put_in_the_folder_while_the_export_ran_stops_the_swap(tmp_path):
    exported = _earlier_export(tmp_path / "exported")
    staging = prepare_out_dir(exported, force=True)
    (staging / "manifest.json").write_text("{}")
    (exported / "notes.txt").write_text("written while the export ran")
    with pytest.raises(ExportError, match="notes.txt"):
        publish(staging, exported)
    assert (exported / "notes.txt").exists() and (exported / "generator.onnx").read_bytes() == b"old graph"


def test_the_current_folder_is_refused_before_any_work(tmp_path, golden_dir):
    # The checkpoint does not exist: had anything been read or exported first, that would be the error.
    proc = _export("--ckpt", tmp_path / "missing.pth.tar", "--config", "tiny-test", "--out", ".", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "is the current folder or contains it" in err and "Traceback" not in err
    assert "checkpoint" not in err
    proc = _export("--ckpt", golden_dir / "checkpoint.pth.tar", "--config", "tiny-test", "--out", ".", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "is the current folder or contains it" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_export_leaves_nothing(tmp_path, golden_dir, sig):
    work = tmp_path / "work dir"
    work.mkdir()
    proc = _export("--ckpt", golden_dir / "checkpoint.pth.tar", "--config", "tiny-test", "--out", "out",
                   "--precision", "all", cwd=work, start_new_session=True)
    # In the middle of exporting: once the staging folder holds its first graph (whatever the machine's speed;
    # the rest of a --precision all export, its fp16 emulation included, is still to come).
    def staged_graphs():
        return [g for p in work.iterdir() if p.name.startswith(".out.partial") for g in p.glob("*.onnx")]

    deadline = time.monotonic() + 300  # against hanging, not a speed check
    while time.monotonic() < deadline and not staged_graphs() and proc.poll() is None:
        time.sleep(0.05)
    assert staged_graphs(), "the export never staged a graph"
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig and "Traceback" not in err, err[-2000:]
    assert list(work.iterdir()) == []  # no staging folder, no out/
