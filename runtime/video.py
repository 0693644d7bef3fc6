"""Video in (OpenCV) and out (H.264 MP4 through the ffmpeg binary that imageio-ffmpeg ships).

The writer pipes raw RGB frames to ffmpeg, muxes the driving video's audio when asked, and writes to a
temporary name that is renamed only when the video is complete.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VideoError
from .fileio import current_umask

# File suffixes treated as videos (OpenCV reads all of them, GIF included).
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    frame_count: int  # as reported by the container; may be an estimate
    width: int
    height: int


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def open_video(path: str | Path) -> tuple["object", VideoInfo]:
    """Open a video file with OpenCV.

    Raises:
        VideoError: missing or unreadable file, or a video without frames.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        streams = _streams(path)
        if "Audio" in streams and "Video" not in streams:
            raise VideoError(f"{path} has no video stream (audio only); pass a video with frames")
        raise VideoError(f"{path} is not a video OpenCV can read (try converting it to H.264 MP4)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    info = VideoInfo(path, fps if fps > 0 else 25.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                     int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return cap, info


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Frames of a video as RGB uint8 (H, W, 3). Raises VideoError if it has none."""
    import cv2

    cap, _ = open_video(path)
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    if count == 0:
        raise VideoError(f"{path} has no frames that can be decoded")


def _streams(path: str | Path) -> set[str]:
    """Kinds of streams ffmpeg finds in a media file ('Video', 'Audio', ...); empty if unreadable."""
    try:
        res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired, VideoError):
        return set()
    return set(re.findall(r"Stream #\d+:\d+.*?: (\w+):", res.stderr))


def has_audio(path: str | Path) -> bool:
    """Whether a media file has an audio stream (asks ffmpeg)."""
    return "Audio" in _streams(path)


class VideoWriter:
    """H.264 (yuv420p) MP4 writer; ``close()`` publishes the file, ``abort()`` (or an exception) removes it.

    Args:
        path: output ``.mp4``.
        fps: frame rate.
        size: (width, height); both must be even for yuv420p.
        audio_from: a media file whose first audio stream is copied in (AAC), if it has one.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, audio_from: str | Path | None = None,
                 crf: int = 18) -> None:
        self.path = Path(path)
        self.size = size
        w, h = size
        if w % 2 or h % 2:
            raise VideoError(f"H.264 needs even frame sizes, got {w}x{h}")
        if self.path.is_dir():
            raise VideoError(f"output path {self.path} is a folder; give a file name such as result.mp4")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".partial.mp4", dir=self.path.parent)
            os.close(fd)
        except OSError as exc:
            raise VideoError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._tmp = Path(tmp)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:.6f}", "-i", "-"]
        self.with_audio = audio_from is not None and has_audio(audio_from)
        if self.with_audio:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k",
                    "-shortest"]
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", "veryfast",
                "-movflags", "+faststart", "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append an RGB uint8 frame of the writer's size."""
        if frame.shape != (self.size[1], self.size[0], 3) or frame.dtype != np.uint8:
            raise VideoError(f"frame must be uint8 ({self.size[1]}, {self.size[0]}, 3), got {frame.dtype} {frame.shape}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            err = self._proc.stderr.read().decode(errors="replace").strip()
            self.abort()
            raise VideoError(f"ffmpeg stopped while writing {self.path}: {err[-300:]}") from None
        self.frames += 1

    def close(self) -> Path:
        if self._proc is None:
            return self.path
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace").strip()
        code = self._proc.wait()
        self._proc = None
        if code != 0 or self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            reason = "no frames were written" if self.frames == 0 else f"ffmpeg failed: {err[-300:]}"
            raise VideoError(f"could not write {self.path}: {reason}")
        os.chmod(self._tmp, 0o666 & ~current_umask())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
