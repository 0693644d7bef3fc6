"""The portraits a live session animates: one image, or every image in a folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import ImageError
from ..preprocess import IMAGE_SUFFIXES


def list_portraits(source: Path) -> list[Path]:
    """``[source]`` for a file; for a folder, its images (by ``IMAGE_SUFFIXES``), sorted by name.

    Files are not read here (``LiveSession`` reads them all before the camera opens).

    Raises:
        ImageError: a folder without images.
    """
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ImageError(f"--source {source} is a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return found
    return [source]
