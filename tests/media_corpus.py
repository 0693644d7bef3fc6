"""Awkward real-world media, made by the tests themselves with the ffmpeg that imageio-ffmpeg ships.

Every file is generated: phone-like clips (audio a little shorter than the video, a variable frame rate,
a video stream that starts after its audio), a JPEG with EXIF orientation 6, and broken inputs
(truncated, audio only, an MP3 with cover art, a one-frame video, an image too small to use), and a video
whose first frame alone is a portrait.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np

from fomm_deploy.runtime.media.samples import sample_face_path
from fomm_deploy.runtime.media.video import ffmpeg_exe


def ffmpeg(*args: str) -> None:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def frame_marker(rate: float, seconds: float, size: int = 64) -> str:
    """lavfi source whose frame at time t shows a white bar at x = 40 t px (mod the width): its time, readable back."""
    return (f"color=c=black:s={size}x{size}:r={rate}:d={seconds},"
            f"drawbox=x='mod(t*40,{size - 8})':y=0:w=8:h={size}:c=white:t=fill")


def bar_position(frame: np.ndarray) -> float:
    """Where the white bar of :func:`frame_marker` is (its left edge, px)."""
    column = frame[..., :3].astype(float).mean(axis=(0, 2))
    return float(np.argmax(column > 128))


def vfr_clip(path: Path, size: int = 64) -> Path:
    """1 s at 50 fps then 1 s at 10 fps (timestamps say so), no audio; the bar moves 40 px/s."""
    ffmpeg("-f", "lavfi", "-i", frame_marker(50, 1, size), "-f", "lavfi", "-i", frame_marker(10, 1, size),
           "-filter_complex", "[0:v]setpts=PTS-STARTPTS[a];[1:v]setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]",
           "-map", "[v]", "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def beep_expr(at: float) -> str:
    return f"aevalsrc='if(between(t,{at},{at + 0.1}),0.8*sin(2*PI*1000*t),0)':s=44100:d=3"


def offset_clip(path: Path, video_start: float = 1.0, beep_at: float = 1.5, size: int = 64) -> Path:
    """Audio from 0 s with a beep at ``beep_at``; the video stream starts at ``video_start`` (2 s long)."""
    ffmpeg("-f", "lavfi", "-i", frame_marker(25, 2, size), "-f", "lavfi",
           "-i", beep_expr(beep_at), "-filter_complex", f"[0:v]setpts=PTS-STARTPTS+{video_start}/TB[v]",
           "-map", "[v]", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    return path


def short_audio_clip(path: Path, seconds: float = 2.0, audio_seconds: float = 1.9, size: int = 64,
                     fps: int = 25) -> Path:
    """A clip whose audio ends ``seconds - audio_seconds`` early, as phone recordings do."""
    ffmpeg("-f", "lavfi", "-i", frame_marker(fps, seconds, size), "-f", "lavfi",
           "-i", f"sine=frequency=440:duration={audio_seconds}", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    return path


def portrait_video(path: Path, image: Path, frames: int = 5, size: int = 128) -> Path:
    """``frames`` frames at 10 fps: the first is ``image`` (scaled to ``size`` square), the others black, so only
    a reader of its first frame sees a portrait."""
    ffmpeg("-loop", "1", "-i", str(image), "-vf",
           f"scale={size}:{size},drawbox=x=0:y=0:w=iw:h=ih:c=black:t=fill:enable='gte(n,1)'", "-r", "10",
           "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def mixed_portrait_folder(folder: Path) -> Path:
    """A new folder of a.png (the bundled face), b.mp4 (a video whose first frame alone is that face), a text
    file, a hidden copy of a.png and a sub-folder named c.jpg: a.png and b.mp4 are its portraits."""
    folder.mkdir()
    (folder / "a.png").write_bytes(cv2.imencode(".png", cv2.imread(str(sample_face_path())))[1].tobytes())
    portrait_video(folder / "b.mp4", folder / "a.png")
    (folder / "notes.txt").write_text("not a portrait")
    (folder / ".hidden.png").write_bytes((folder / "a.png").read_bytes())
    (folder / "c.jpg").mkdir()
    return folder


def one_frame_clip(path: Path, fps: int = 25, audio_seconds: float | None = 1.0, size: int = 64) -> Path:
    """A video of a single frame at ``fps``, with ``audio_seconds`` of a tone (longer than the video, as a
    phone's still-with-sound clip is), or without audio for None."""
    audio = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={audio_seconds}"] if audio_seconds else []
    ffmpeg("-f", "lavfi", "-i", frame_marker(fps, 1 / fps, size), *audio, "-map", "0:v",
           *(["-map", "1:a", "-c:a", "aac"] if audio else []), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def audio_only(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return path


def mp3_with_cover(path: Path, cover: Path) -> Path:
    cv2.imwrite(str(cover), np.full((64, 64, 3), 128, np.uint8))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-i", str(cover), "-map", "0:a", "-map", "1:v",
           "-c:a", "libmp3lame", "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(path))
    return path


def truncated(path: Path, source: Path) -> Path:
    """The first 60% of an MP4 whose index (moov) is at its end: what an interrupted copy leaves."""
    full = path.with_name(path.stem + "-full.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(full))
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    full.unlink()
    return path


ASTRONAUT = Path(__file__).resolve().parent / "data" / "astronaut.png"


def astronaut_clip(path: Path, frames: int = 100, fps: int = 25, size: int = 128, *extra: str) -> Path:
    """``frames`` frames of astronaut.png's face swaying (a ``size`` square window moving over it), H.264;
    ``extra``: more ffmpeg output options (e.g. ``-movflags +faststart``, ``-f h264``)."""
    ffmpeg("-loop", "1", "-i", str(ASTRONAUT), "-vf",
           f"scale={2 * size}:{2 * size},crop={size}:{size}:'{size // 2}+{size // 3}*sin(2*t)':{size // 4}",
           "-r", str(fps), "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def truncated_front_index(path: Path, keep: float = 0.7, frames: int = 100) -> Path:
    """A phone or web clip cut short: an MP4 with its index at the front (``+faststart``, as uploads are
    written) whose media data ends at ``keep`` of its length; OpenCV opens it and decodes the frames that are
    there."""
    full = path.with_name(path.stem + "-full.mp4")
    astronaut_clip(full, frames, 25, 128, "-movflags", "+faststart")
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path


def damaged_mid_clip(path: Path, at: float = 0.8, frames: int = 100) -> Path:
    """A whole MP4 (index and all its bytes) whose media data is overwritten at ``at`` of its length: the
    decoder stops there, well before the count the index announces."""
    astronaut_clip(path, frames, 25, 128, "-movflags", "+faststart")
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    return path


def raw_h264(path: Path, rate: int = 25, seconds: float = 4.0, size: int = 64) -> Path:
    """A bare H.264 stream (no container: no timestamps, no frame count, no duration) of :func:`frame_marker`."""
    ffmpeg("-f", "lavfi", "-i", frame_marker(rate, seconds, size), "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-f", "h264", str(path))
    return path


def durationless_mkv(path: Path, rate: int = 25, seconds: float = 4.0, size: int = 64) -> Path:
    """A Matroska file written to a pipe, as a live recorder writes it: no duration and no frame count in its
    header."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                          frame_marker(rate, seconds, size), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f",
                          "matroska", "pipe:1"], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    path.write_bytes(res.stdout)
    return path


def exif_rotated_jpeg(path: Path, image: np.ndarray, orientation: int = 6) -> Path:
    """``image`` (BGR) stored as a JPEG with an EXIF orientation tag, as phone cameras write it."""
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    # TIFF header (little endian), one IFD entry: 0x0112 Orientation, SHORT, count 1, value.
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) \
        + struct.pack("<I", 0)
    exif = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    data = jpeg.tobytes()
    path.write_bytes(data[:2] + app1 + data[2:])
    return path


def decoded_audio(path: Path, rate: int = 8000) -> np.ndarray:
    """The first audio stream of a file as mono float32 samples at ``rate`` Hz."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                          "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return np.frombuffer(res.stdout, np.float32)


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
