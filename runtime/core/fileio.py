"""Atomic file output: whatever we write (checkpoints, graphs, engines, videos) appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2

from .errors import InputError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    The temporary name starts with a dot and ends in ``.tmp``, so it never looks like a finished file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_image(path: str | Path, image_bgr) -> Path:
    """Write an image atomically; the format follows the suffix (OpenCV's ``imencode``)."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image_bgr)
    if not ok:
        raise OSError(f"cannot encode {path.name} as {path.suffix}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


def make_staging_dir(final: Path) -> Path:
    """A fresh hidden folder beside ``final`` with normal permissions, to be renamed into place when complete."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


def user_cache_dir(kind: str) -> Path:
    """This user's cache folder for ``kind`` (``engines``, ``torch-compile``): ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``fomm-deploy/<kind>``. Not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fomm-deploy" / kind


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-sized blocks (checkpoints, graphs, engine keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | Path, *, inputs: dict[str, str | Path | None] | None = None, force: bool = False,
                      option: str = "--out", suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, before any work, that ``path`` can be written as a command's output file.

    Refuses: a folder; a suffix not in ``suffixes``; the same file as one of ``inputs`` (``{"--driving":
    path}``), however it is spelled (links included), even with ``force``; an existing file unless ``force``;
    a place where no file can be created. Returns the path.

    Raises:
        InputError: with the option's name and how to fix it.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{option} must end in {' or '.join(suffixes)}, got {path.name}")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name such as {path / ('result' + (suffixes or ('.mp4',))[0])}")
    for name, other in (inputs or {}).items():
        if other is not None and (_same_file(path, Path(other)) or path.resolve() == Path(other).resolve()):
            raise InputError(f"{option} {path} is the {name} input: writing it would replace it; give the output "
                             "another name")
    if path.exists() and not force:
        raise InputError(f"{option} {path} already exists; pass --force to replace it")
    folder = path.parent
    while not folder.exists():  # missing folders are created; the nearest existing one must take them
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {option} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {option} {path}: {exc.strerror or exc} ({folder})") from None
    return path
