"""Sending the animated portrait to a virtual camera (pyvirtualcam: v4l2loopback on Linux, OBS elsewhere)."""

from __future__ import annotations

from ..core.errors import BackendUnavailableError


def require_pyvirtualcam():
    """The pyvirtualcam module.

    Raises:
        BackendUnavailableError: pyvirtualcam is not installed.
    """
    try:
        import pyvirtualcam
    except ImportError:
        raise BackendUnavailableError("--virtual-cam needs pyvirtualcam: pip install 'fomm-deploy[virtualcam]' "
                                      "(and v4l2loopback on Linux, or OBS's virtual camera on Windows/macOS)") from None
    return pyvirtualcam


def open_virtual_cam(width: int, height: int, fps: float):
    """A started ``pyvirtualcam.Camera`` that takes (height, width, 3) uint8 **RGB** frames via ``send``.

    Raises:
        BackendUnavailableError: pyvirtualcam is missing, or it found no virtual camera device to use.
    """
    pyvirtualcam = require_pyvirtualcam()
    try:
        cam = pyvirtualcam.Camera(width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except Exception as exc:
        raise BackendUnavailableError(f"cannot start the virtual camera: {exc}") from None
    print(f"virtual camera: {cam.device}")
    return cam
