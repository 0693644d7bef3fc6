"""Where an export is written: the output folder checked before any work, a staging folder beside it, and the
swap of the finished staging folder into place, so that an interrupted or failed export leaves nothing that
looks valid.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fomm_deploy.runtime.core.errors import ExportError
from fomm_deploy.runtime.core.fileio import make_staging_dir

# What an export folder may hold: what fomm-export writes, and the engines and caches the TensorRT backend
# adds beside the graphs. ``--force`` replaces a folder only when everything in it is one of these.
EXPORT_ARTEFACTS = ("manifest.json", "*.onnx", "*.onnx.data", "engines", "*.engine", "*.timing-cache", "*.lock")


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output folder that the export could not, or must not, replace; before any work.

    Raises:
        ExportError: a file; the current folder or one containing it; a non-empty folder without
            ``--force``; with ``--force``, a folder holding anything fomm-export did not write.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output path {out_dir} is a file; pass a folder to --out")
    here = Path.cwd().resolve()
    target = out_dir.resolve()
    if target == here or target in here.parents:
        raise ExportError(f"--out {out_dir} is the current folder or contains it; pass a new folder such as "
                          "exported/vox")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ExportError(f"output folder {out_dir} already exists and is not empty; pass --force to replace "
                              "it, or choose another --out")
        foreign = sorted(p.name for p in out_dir.iterdir() if not any(p.match(pat) for pat in EXPORT_ARTEFACTS))
        if foreign or not (out_dir / "manifest.json").is_file():
            what = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "") if foreign else "no manifest.json"
            raise ExportError(f"--force replaces only a folder an earlier fomm-export wrote, and {out_dir} holds "
                              f"other files ({what}); choose another --out")


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Validate the output folder and create a staging folder beside it."""
    check_out_dir(out_dir, force)
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(out_dir)
    except OSError as exc:
        raise ExportError(f"cannot write the output folder {out_dir}: {exc.strerror or exc}") from None
    return staging


def publish(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging folder into place (the old folder, if any, is removed afterwards)."""
    backup = None
    if out_dir.exists():
        backup = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, backup)
    os.rename(staging, out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
