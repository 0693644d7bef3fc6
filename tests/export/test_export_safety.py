"""fomm-export never replaces what it did not write, and an interrupted export leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fomm_deploy.export.publish import check_out_dir
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
    assert proc.returncode == 1 and "holds other files (holiday.jpg)" in err and "Traceback" not in err
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    # A folder an earlier export wrote is replaced; one with an extra file of the user's is not.
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "manifest.json").write_text("{}")
    (exported / "kp_detector.onnx").write_bytes(b"old")
    check_out_dir(exported, force=True)
    (exported / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        check_out_dir(exported, force=True)


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
