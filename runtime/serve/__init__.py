"""``fomm-serve``: animation as a service on one machine (an ASGI app on uvicorn).

* ``engines.py``: the export's backends, loaded once and shared by every request and session (one lock).
* ``sessions.py``: WebSocket puppeteering sessions (each its own source, reference pose and options) and the
  worker that batches their newest frames into one generator call.
* ``metrics.py``: the Prometheus text exposition of ``/metrics``.
* ``app.py``: the Starlette app (``/``, ``/healthz``, ``/metrics``, ``/v1/animate``, ``/v1/live``), its token
  check and its limits.
* ``guards.py``: the Host and Origin check, the uploads' folder, the rate-limited log, and the HTTP layer's
  header timeout and connection limit.
* ``client.py``: a Python client of the live protocol; ``ServerProcess`` runs a server in a subprocess.
* ``ray_app.py``: the Ray Serve deployment of ``fomm-serve --ray`` (replicas, each with its own engines).
* ``cli.py``: the ``fomm-serve`` command.
"""

import os

# Source portraits: at most this many pixels on a side (``app.Limits.max_image_side``'s default).
MAX_IMAGE_SIDE = 4096


def refuse_image_bombs(max_side: int = MAX_IMAGE_SIDE) -> None:
    """Make OpenCV refuse to decode images of more than ``max_side`` squared pixels: a small file that claims a
    huge picture (a decompression bomb) becomes a ``cv2.error`` instead of gigabytes of memory.

    OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, so this must run before the serving process imports it
    (``cv2``, or any module that imports it): ``fomm-serve`` calls it first thing, and so does each Ray replica,
    and both import the app and the engines only afterwards.
    A value the user set is kept.
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_side * max_side))
