"""Video in (OpenCV) and out (H.264 MP4, VP9 WebM, GIF or PNG frames through the ffmpeg binary that
imageio-ffmpeg ships).

The writer pipes raw RGB frames to ffmpeg, muxes the driving video's audio when asked, and writes to a
temporary name that is renamed only when the video is complete.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import VideoError
from ..core.fileio import current_umask, make_staging_dir
from .preprocess import IMAGE_SUFFIXES, load_image, to_uint8

# File suffixes treated as videos (OpenCV reads all of them, GIF included).
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}

# ffmpeg's demuxers of bare elementary streams (``Input #0, h264, from ...``): no container, so no timestamps
# and no frame count; their frames are timed by their rate (the stream's own, or ffmpeg's 25 fps default).
RAW_STREAM_FORMATS = {"h264", "hevc", "m4v", "mpegvideo", "mjpeg", "rawvideo", "vc1", "obu", "ivf", "avs2", "avs3",
                      "vvc", "dirac", "cavsvideo"}


@dataclass(frozen=True)
class VideoInfo:
    """What a driving video's container says about it.

    ``fps`` is the nominal frame rate (ffmpeg's ``tbr``: for a variable-frame-rate phone clip the rate of its
    fastest part), used as the output's constant rate; ``average_fps`` is frames over duration.
    ``video_start`` / ``audio_start`` are the streams' start times in seconds on the container's clock
    (a phone clip may start its video after its audio); ``duration`` is the container's, 0 if unknown.
    """

    path: Path
    fps: float
    frame_count: int  # as reported by the container; may be an estimate
    width: int
    height: int
    average_fps: float = 0.0
    video_start: float = 0.0
    audio_start: float | None = None  # None: no audio stream
    duration: float = 0.0
    # True: ``frame_count`` is the container's index (MP4/MOV), which every decode must reach; False: the
    # frames were counted in the file itself (every other container, and raw streams, whose headers may say
    # nothing or anything: a duration-less MKV, a raw H.264 stream).
    indexed: bool = False
    timestamps: bool = True  # False: a raw stream; its frames are timed ``index / fps``

    @property
    def has_audio(self) -> bool:
        return self.audio_start is not None


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class _Probe:
    video: bool  # a real video stream (cover art does not count)
    cover_art: bool
    audio: bool
    tbr: float
    video_start: float | None
    audio_start: float | None
    container_start: float
    duration: float
    error: str  # ffmpeg's complaint when it cannot read the file at all
    container: str = ""  # ffmpeg's demuxer: "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "h264", ...
    stream_fps: float = 0.0  # the video stream's "fps" (its average rate), 0 if not given


def _probe(path: str | Path) -> _Probe:
    """What ``ffmpeg -i`` says about a media file (ffprobe is not shipped with imageio-ffmpeg)."""
    try:
        res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                             timeout=60)
        text = res.stderr
    except (OSError, subprocess.TimeoutExpired, VideoError):
        text = ""
    video = audio = cover = False
    tbr = stream_fps = 0.0
    vstart = astart = None
    for line in text.splitlines():
        m = re.match(r"\s*Stream #\d+:\d+.*?: (\w+):(.*)", line)
        if not m:
            continue
        kind, rest = m.groups()
        start = re.search(r"start (-?\d+(?:\.\d+)?)", rest)
        if kind == "Video":
            if "(attached pic)" in rest:
                cover = True
                continue
            if not video:
                video = True
                rate = re.search(r"(\d+(?:\.\d+)?)(k?) tbr", rest)
                if rate:
                    tbr = float(rate.group(1)) * (1000 if rate.group(2) else 1)
                rate = re.search(r"(\d+(?:\.\d+)?)(k?) fps", rest)
                if rate:
                    stream_fps = float(rate.group(1)) * (1000 if rate.group(2) else 1)
                vstart = float(start.group(1)) if start else None
        elif kind == "Audio" and not audio:
            audio = True
            astart = float(start.group(1)) if start else None
    cstart = re.search(r"Duration: [^,]+, start: (-?\d+(?:\.\d+)?)", text)
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    container_start = float(cstart.group(1)) if cstart else 0.0
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    errors = [ln.strip() for ln in text.splitlines() if str(path) in ln and ":" in ln and "Input #" not in ln]
    demuxer = re.search(r"Input #0, (.+?), from ", text)
    return _Probe(video, cover, audio, tbr, vstart, astart, container_start, duration, errors[-1] if errors else "",
                  demuxer.group(1) if demuxer else "", stream_fps)


def _count_frames(path: Path) -> int | None:
    """The frames of the first video stream, counted by demuxing the whole file (its packets are read, not
    decoded: a second or so for a long video), or None if ffmpeg cannot read it. What a header claims (a
    duration, a frame count) can be missing or wrong; this is what the decoder will be given."""
    try:
        res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-stats", "-i", str(path),
                              "-map", "0:v:0", "-c", "copy", "-f", "null", "-"], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.TimeoutExpired, VideoError):
        return None
    counts = re.findall(r"frame=\s*(\d+)", res.stderr)
    return int(counts[-1]) if counts else None


def open_video(path: str | Path) -> tuple["object", VideoInfo]:
    """Open a video file with OpenCV, and read what its container says about timing and audio.

    Raises:
        VideoError: a URL, a missing, truncated or unreadable file, an audio-only file (cover art included),
            or a video without decodable frames. The message says which and what to do.
    """
    text = str(path)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise VideoError(f"{text}: URLs are not supported; download the video and pass the file")
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    probe = _probe(path)
    if probe.audio and not probe.video:
        what = " (its only picture is cover art)" if probe.cover_art else ""
        raise VideoError(f"{path} has no video stream (audio only{what}); pass a video with frames")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cut = "index" if "moov atom not found" in probe.error else _iso_media_truncated(path)
        if cut == "data":  # its index is at the front, whole, and the file ends before its first frame
            raise VideoError(f"{path} is truncated: the file ends before its first frame (the recording or the "
                             "copy did not finish); copy it again")
        if cut:
            raise VideoError(f"{path} is truncated (its index is missing: the recording or the copy did not "
                             "finish); copy or export it again")
        if probe.video:
            raise VideoError(f"{path} has a video stream OpenCV cannot decode; convert it to H.264 MP4 "
                             "(ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)")
        raise VideoError(f"{path} is not a video OpenCV can read (ffmpeg finds no video stream in it)")
    avg = cap.get(cv2.CAP_PROP_FPS) or 0.0
    raw = probe.container in RAW_STREAM_FORMATS
    if raw:  # ffmpeg's tbr of a raw H.264 stream is its field rate (50 for 25 fps): its own fps is the rate
        fps = probe.stream_fps if 0 < probe.stream_fps <= 240 else (avg if 0 < avg <= 240 else 25.0)
    else:
        fps = probe.tbr if 0 < probe.tbr <= 240 else (avg if avg > 0 else 25.0)
    indexed = _is_iso_media(path)
    announced = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
    announced = int(announced) if 0 < announced < 2**31 else 0
    if indexed and _iso_media_truncated(path) == "data":  # a whole index (at the front), the data after it cut
        cap.release()
        found = _count_frames(path)
        keep = ""
        if found:
            has = f"only {found} are in the file"
            keep = ", or keep the frames it has with ffmpeg -i IN -c copy OUT.mp4"
        else:
            has = "the file ends before the first of them"
        raise VideoError(f"{path} is truncated: its index announces {announced} frames and {has} (the recording "
                         f"or the copy did not finish); copy it again{keep}")
    if indexed and announced > 0:
        frame_count = announced
    else:
        counted = _count_frames(path)
        indexed = False
        frame_count = counted if counted is not None else announced
    duration = probe.duration
    if (raw or duration <= 0) and frame_count > 0:
        duration = frame_count / fps
    origin = probe.container_start
    vstart = (probe.video_start if probe.video_start is not None else origin) - origin
    astart = None if not probe.audio else (probe.audio_start if probe.audio_start is not None else origin) - origin
    info = VideoInfo(path, float(fps), frame_count,
                     int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     average_fps=float(fps if raw else avg), video_start=max(0.0, vstart),
                     audio_start=None if astart is None else max(0.0, astart), duration=duration, indexed=indexed,
                     timestamps=not raw)
    return cap, info


def _is_iso_media(path: Path) -> bool:
    """Whether a file is ISO base media (MP4, MOV, 3GP, M4V: it starts with an ``ftyp`` box), whose frame
    count is its index's."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == b"ftyp"


def _iso_media_truncated(path: Path) -> str | None:
    """Whether an MP4/MOV file (ISO base media) is a copy or a recording that did not finish: ``"index"`` if
    it has no ``moov`` index (written last, so the file ends before it), ``"data"`` if it has one and ends
    inside a later box (its media data), None if neither (or it is no ISO media)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8 or head[4:8] != b"ftyp":
                return None
            pos, seen_moov = 0, False
            while pos < size:
                f.seek(pos)
                header = f.read(16)
                if len(header) < 8:
                    break
                box, kind = struct.unpack(">I", header[:4])[0], header[4:8]
                if box == 1 and len(header) == 16:
                    box = struct.unpack(">Q", header[8:16])[0]
                elif box == 0:
                    box = size - pos
                if box < 8 or pos + box > size:
                    break
                seen_moov |= kind == b"moov"
                pos += box
            else:
                return None if seen_moov else "index"
            return "data" if seen_moov else "index"
    except OSError:
        return None


def iter_timed_frames(path: str | Path) -> Iterator[tuple[np.ndarray, float]]:
    """Frames of a video as (RGB uint8 (H, W, 3), presentation time in seconds on the container's clock).

    Times follow the file's timestamps, so a variable-frame-rate clip keeps its timing and a video stream
    that starts after its audio starts at ``info.video_start``; a raw stream (no timestamps) is timed by its
    rate. They never decrease.

    Raises:
        VideoError: as :func:`open_video`; when no frame can be decoded; when the decoder runs out of frames
            well before the count the file's index announces (a damaged or cut file), once they are read.
    """
    cap, info = open_video(path)
    count, last = 0, -1.0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) if info.timestamps else -1.0
            t = info.video_start + (pos / 1000.0 if pos >= 0 else count / info.fps)
            t = max(t, last + 1e-6) if count else t
            last = t
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), t
    finally:
        cap.release()
    if count == 0:
        raise VideoError(f"{path} has no frames that can be decoded (0 frames)")
    # An index may announce a frame or two that a decoder drops (an edit list): more than that is damage.
    if info.indexed and info.frame_count - count > max(2, info.frame_count // 50):
        raise VideoError(f"{path} is damaged: its index announces {info.frame_count} frames and only {count} "
                         f"could be decoded; copy it again, or re-encode the frames that decode with "
                         f"ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4")


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Frames of a video as RGB uint8 (H, W, 3). Raises VideoError if it has none."""
    for frame, _ in iter_timed_frames(path):
        yield frame


def read_frames(path: str | Path, *, limit: int | None = None) -> np.ndarray:
    """All frames of a video, or its first ``limit``, as one (T, H, W, 3) uint8 RGB array.

    ``path`` is a video file (read as :func:`iter_frames` reads it), or a folder of frame images: its image
    files in name order (hidden files and sub-folders passed over), each read as :func:`~.preprocess.load_image`
    reads an image (EXIF orientation, 16-bit depth, alpha over white).

    Raises:
        VideoError: as :func:`open_video`; a folder without frames, or whose frames differ in size.
        ImageError: a frame of a folder that is not a readable image.
    """
    path = Path(path)
    if not path.is_dir():
        with closing(iter_frames(path)) as video:
            return np.stack(list(islice(video, limit)))
    names = sorted(p for p in path.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
    frames: list[np.ndarray] = []
    for p in names[:limit]:
        frame = to_uint8(load_image(p, min_side=1))
        if frames and frame.shape != frames[0].shape:
            first = frames[0].shape
            raise VideoError(f"{path}: its frames differ in size: {names[0].name} is {first[1]}x{first[0]}, "
                             f"{p.name} is {frame.shape[1]}x{frame.shape[0]}")
        frames.append(frame)
    if not frames:
        raise VideoError(f"{path} has no frames (no {', '.join(sorted(IMAGE_SUFFIXES))} files in it)")
    return np.stack(frames)


def has_audio(path: str | Path) -> bool:
    """Whether a media file has an audio stream (asks ffmpeg)."""
    return _probe(path).audio


# Output containers: what ``--out``'s name selects. "frames" is a folder of PNG images (frame_000000.png, ...).
CONTAINERS = ("mp4", "webm", "gif", "frames")
CONTAINER_SUFFIXES = {".mp4": "mp4", ".webm": "webm", ".gif": "gif"}


def container_for(path: str | Path) -> str | None:
    """The container an output path asks for: by suffix (.mp4, .webm, .gif), or ``frames`` for a path that
    ends in a slash or is an existing folder; None for anything else."""
    text = str(path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "frames"
    return CONTAINER_SUFFIXES.get(Path(text).suffix.lower())


class VideoWriter:
    """Video writer: H.264 MP4 (default), VP9 WebM, looping palette GIF, or a folder of PNG frames.

    ``close()`` publishes the output, ``abort()`` (or an exception) removes it: a file is written under a
    temporary name and renamed, a frame folder is filled as a hidden staging folder and renamed (an existing
    empty folder of that name is replaced).

    Frames go either one after another (``write(frame)``: one frame each ``1/fps``) or at their own times
    (``write(frame, t)``, ``t`` in seconds from the start of the output): the file then has a constant
    ``fps``, each frame held until the next one's time (repeated, or dropped when two fall in one frame
    period), so it lasts as long as the frames' times say, and ``close(end=T)`` holds the last frame until
    ``T`` (a live recording lasts as long as the session; without ``end`` it is shown as long as the frame
    before it). ``frames`` counts the frames in the file.

    Audio (``audio_from``): the first audio stream of that file, from ``audio_start`` seconds on (AAC in MP4,
    Opus in WebM; GIF and frame folders have none), padded with silence or cut so that it ends with the video.

    ffmpeg runs in its own session, so a Ctrl-C to the terminal's process group reaches only this process,
    which then finishes (or aborts) the file itself.

    Args:
        path: the output (``.mp4``, ``.webm``, ``.gif`` or a folder).
        fps: frame rate of the file.
        size: (width, height); both must be even for MP4 and WebM (yuv420p).
        container: one of :data:`CONTAINERS`; default: from ``path`` (:func:`container_for`), else ``mp4``.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, audio_from: str | Path | None = None,
                 audio_start: float = 0.0, crf: int = 18, container: str | None = None) -> None:
        self.path = Path(path)
        self.container = container or container_for(path) or "mp4"
        if self.container not in CONTAINERS:
            raise VideoError(f"unknown container '{self.container}'; choose from {', '.join(CONTAINERS)}")
        self.size = size
        self.fps = float(fps)
        if not self.fps > 0:
            raise VideoError(f"frame rate must be positive, got {fps}")
        w, h = size
        if self.container in ("mp4", "webm") and (w % 2 or h % 2):
            raise VideoError(f"{self.container.upper()} (yuv420p) needs even frame sizes, got {w}x{h}")
        if self.container == "frames":
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise VideoError(f"output folder {self.path} exists and is not an empty folder")
        elif self.path.is_dir():
            raise VideoError(f"output path {self.path} is a folder; give a file name such as result.mp4")
        self.with_audio = (audio_from is not None and self.container in ("mp4", "webm") and has_audio(audio_from))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.container == "frames":
                self._tmp = make_staging_dir(self.path)
                target = str(self._tmp / "frame_%06d.png")
            else:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial.{self.container}",
                                           dir=self.path.parent)
                os.close(fd)
                self._tmp = Path(tmp)
                target = str(self._tmp)
        except OSError as exc:
            raise VideoError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{self.fps:.6f}", "-i", "-"]
        # Audio is muxed in at close(), once the video's exact length is known: cut or padded to it there.
        # (A single pass with apad + -shortest overshoots the video's end by a variable amount.)
        self._audio = (Path(audio_from), float(audio_start)) if self.with_audio else None
        if self.container == "mp4":
            cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", "veryfast",
                    "-movflags", "+faststart", "-f", "mp4", target]
        elif self.container == "webm":
            # crf 18 on H.264's scale is about 28 on VP9's (0-63); constant quality needs -b:v 0.
            cmd += ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", str(min(63, crf + 10)), "-b:v", "0",
                    "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-f", "webm", target]
        elif self.container == "gif":
            # One palette for the whole clip (from every frame), then dithered; loops for ever.
            cmd += ["-filter_complex", "[0:v]split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a",
                    "-loop", "0", "-f", "gif", target]
        else:
            cmd += ["-c:v", "png", "-start_number", "0", "-f", "image2", target]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.frames = 0  # frames in the file so far
        self.received = 0  # frames given to write()
        self._held: np.ndarray | None = None  # timed mode: the frame waiting for the next one's time
        self._held_slot = 0
        self._last_gap = 1  # frame periods the last frame before the held one was shown for
        self._timed: bool | None = None
        self._aborted = False

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (self.size[1], self.size[0], 3) or frame.dtype != np.uint8:
            raise VideoError(f"frame must be uint8 ({self.size[1]}, {self.size[0]}, 3), got {frame.dtype} {frame.shape}")
        return np.ascontiguousarray(frame)

    def _emit(self, frame: np.ndarray, times: int = 1) -> None:
        data = frame.tobytes()
        try:
            for _ in range(times):
                self._proc.stdin.write(data)
                self.frames += 1
        except (BrokenPipeError, OSError):
            err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc else ""
            self.abort()
            raise VideoError(f"ffmpeg stopped while writing {self.path}: {err[-300:] or 'no reason given'}") from None

    def write(self, frame: np.ndarray, t: float | None = None) -> None:
        """Append an RGB uint8 frame of the writer's size; ``t``: its time in seconds (see the class doc)."""
        if self._proc is None:
            raise VideoError(f"{self.path} is already closed")
        timed = t is not None
        if self._timed is None:
            self._timed = timed
        elif self._timed != timed:
            raise VideoError("give every frame a time, or none")
        frame = self._check(frame)
        self.received += 1
        if not timed:
            self._emit(frame)
            return
        slot = max(0, int(round(float(t) * self.fps)))
        if self._held is not None and slot > self._held_slot:
            self._last_gap = slot - self._held_slot
            self._emit(self._held, self._last_gap)
            self._held_slot = slot
        elif self._held is None:
            self._held_slot = 0 if self.frames == 0 else slot  # the first frame also covers the time before it
        self._held = frame.copy()

    def close(self, end: float | None = None) -> Path:
        """Finish and publish the file. ``end``: hold the last frame until this time (timed mode)."""
        if self._aborted:
            raise VideoError(f"{self.path} was not written: the writer was aborted")
        if self._proc is None:
            return self.path
        if self._held is not None:
            # The last frame is shown until ``end``, or for as long as the frame before it was.
            last = max(1, int(round(end * self.fps)) - self._held_slot) if end is not None else self._last_gap
            self._emit(self._held, last)
            self._held = None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace").strip()
        code = self._proc.wait()
        self._proc = None
        if code != 0 or self.frames == 0:
            self._remove_tmp()
            reason = "no frames were written" if self.frames == 0 else f"ffmpeg failed: {err[-300:]}"
            raise VideoError(f"could not write {self.path}: {reason}")
        if self._audio is not None:
            self._mux_audio()
        try:
            if self.container == "frames":
                if self.path.is_dir():
                    self.path.rmdir()  # checked empty when the writer opened; fails if something came since
                os.replace(self._tmp, self.path)
            else:
                os.chmod(self._tmp, 0o666 & ~current_umask())
                os.replace(self._tmp, self.path)
        except OSError as exc:
            self._remove_tmp()
            raise VideoError(f"could not publish {self.path}: {exc.strerror or exc}") from None
        return self.path

    def _mux_audio(self) -> None:
        """Add the audio to the finished video-only temporary file: from ``audio_start``, padded with
        silence or cut so that it lasts exactly as long as the video; the video stream is copied."""
        source, start = self._audio
        fd, muxed = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial.{self.container}",
                                     dir=self.path.parent)
        os.close(fd)
        audio = (["-c:a", "aac", "-b:a", "160k"] if self.container == "mp4"
                 else ["-c:a", "libopus", "-b:a", "128k", "-ar", "48000"])
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(self._tmp),
               *(["-ss", f"{start:.6f}"] if start > 0 else []), "-i", str(source),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", "apad", *audio,
               "-t", f"{self.frames / self.fps:.6f}",
               *(["-movflags", "+faststart"] if self.container == "mp4" else []), "-f", self.container, muxed]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)
        except BaseException:  # Ctrl-C / SIGTERM while muxing: leave nothing behind
            Path(muxed).unlink(missing_ok=True)
            raise
        if res.returncode != 0:
            Path(muxed).unlink(missing_ok=True)
            self._remove_tmp()
            raise VideoError(f"could not add the audio of {source} to {self.path}: {res.stderr.strip()[-300:]}")
        os.replace(muxed, self._tmp)

    def _remove_tmp(self) -> None:
        if self.container == "frames":
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary file: nothing is published."""
        self._aborted = True
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._remove_tmp()

    @property
    def duration(self) -> float:
        """Seconds of video in the file so far."""
        return self.frames / self.fps

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
