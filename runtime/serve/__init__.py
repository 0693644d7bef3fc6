"""``fomm-serve``: animation as a service on one machine (an ASGI app on uvicorn).

* ``engines.py``: the export's backends, loaded once and shared by every request and session (one lock).
* ``live.py``: WebSocket puppeteering sessions (each its own source, reference pose and options) and the
  worker that batches their newest frames into one generator call.
* ``metrics.py``: the Prometheus text exposition of ``/metrics``.
* ``app.py``: the Starlette app (``/``, ``/healthz``, ``/metrics``, ``/v1/animate``, ``/v1/live``), its token
  check and its limits.
* ``cli.py``: the ``fomm-serve`` command.
"""
