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
from fomm_deploy.runtime.core.manifest import listed_files

# The engine cache the TensorRT backends keep in an export folder (runtime/backends/tensorrt.py, onnxrt.py):
# engines, their build locks and timing caches in ``engines/``, and ONNX Runtime's own cache folders under
# ``engines/ort-tensorrt/``. ``--force`` replaces these with the folder; nothing else that is not in the
# manifest.
ENGINE_CACHE = "engines"
ENGINE_CACHE_FILES = ("*.engine", "*.lock", "timing.*.cache")
ORT_ENGINE_CACHE = "ort-tensorrt"


def foreign_files(out_dir: Path) -> list[str] | None:
    """What in an earlier export folder fomm-export did not write (paths relative to it, sorted): everything
    but the files its manifest lists and the engine cache. None when it has no manifest to say (then nothing
    in it is known to be an export's)."""
    listed = listed_files(out_dir)
    if listed is None:
        return None
    foreign: list[str] = []
    for entry in sorted(out_dir.iterdir()):
        if entry.name == ENGINE_CACHE and entry.is_dir() and not entry.is_symlink():
            foreign += _foreign_in_engine_cache(entry, ENGINE_CACHE)
        elif entry.name not in listed or not entry.is_file() or entry.is_symlink():
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def _foreign_in_engine_cache(folder: Path, rel: str) -> list[str]:
    foreign: list[str] = []
    for entry in sorted(folder.iterdir()):
        name = f"{rel}/{entry.name}"
        if entry.is_symlink():
            foreign.append(name)
        elif entry.is_dir():
            if entry.name == ORT_ENGINE_CACHE and rel == ENGINE_CACHE:
                # ONNX Runtime names its own files: only what is in there as plain files and folders
                foreign += [f"{name}/{p.relative_to(entry)}" for p in entry.rglob("*") if p.is_symlink()]
            else:
                foreign.append(name + "/")
        elif not any(entry.match(pattern) for pattern in ENGINE_CACHE_FILES):
            foreign.append(name)
    return foreign


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output folder that the export could not, or must not, replace; before any work.

    Raises:
        ExportError: a file; the current folder or one containing it; a non-empty folder without
            ``--force``; with ``--force``, a folder without a manifest, or holding anything its manifest
            does not list (the engine cache aside): the user's files, whatever their names.
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
        foreign = foreign_files(out_dir)
        if foreign is None:
            names = sorted(p.name for p in out_dir.iterdir())
            what = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise ExportError(f"--force replaces only what an earlier fomm-export wrote, and {out_dir} has no "
                              f"manifest.json that lists its files (it holds {what}); choose another --out")
        if foreign:
            what = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ExportError(f"--force replaces only what an earlier fomm-export wrote (its manifest lists it), "
                              f"and {out_dir} also holds other files ({what}); move them out, or choose another "
                              "--out")


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
    """Swap the finished staging folder into place (the old folder, if any, is removed afterwards).

    Raises:
        ExportError: the old folder now holds something its manifest does not list (put there while the
            export ran): nothing is replaced.
    """
    backup = None
    if out_dir.exists():
        check_out_dir(out_dir, force=True)  # again: what it holds may have changed while the export ran
        backup = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, backup)
    os.rename(staging, out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
