"""The parts of live mode (``fomm-live``), one concept per module.

Pipeline (each stage its own thread, joined by newest-wins slots, so lag never accumulates):

    camera -> [capture] -> newest frame -> [framing: face box, smoothed crop] -> newest crop
           -> [inference: keypoints + generator] -> newest result -> [main: preview, recording, keys]

* ``frames.py``: what travels between the stages (``Captured``, ``Framed``, ``Result``).
* ``slots.py``: ``LatestSlot``, the one-item newest-wins mailbox between two stages.
* ``timing.py``: ``StageTimer``, moving averages of stage times and of the output rate.
* ``capture.py``: opening a camera, device, URL or video file; ``CaptureThread`` with reconnection.
* ``framer.py``: ``FaceFramer``, the smoothed square crop around the face (``runtime/media/framing.py``'s
  ``FaceDetector``), and ``CropAdjust``, the zoom and move keys' change to it.
* ``keys.py``: the key table (``KEYS_HELP``), what each key means, and ``--keys`` scripts.
* ``preview.py``: drawing the preview (camera with the ghost | portrait) and its overlay text; the
  letterboxed portrait-alone frame (``--output-size``).
* ``virtualcam.py``: sending the portrait to a virtual camera (pyvirtualcam).
* ``session.py``: ``LiveOptions``, ``LiveReport`` and ``LiveSession``, which runs it all.

The command line itself is ``runtime/live.py``; the portraits of a ``--source`` folder are listed by
``runtime/media/preprocess.list_portraits``, which fomm-animate uses too.
"""
