"""``fomm-serve``: animation as a service on one machine (an ASGI app on uvicorn).

* ``engines.py``: the export's backends, loaded once and shared by every request and session (one lock).
* ``live.py``: WebSocket puppeteering sessions (each its own source, reference pose and options) and the
  worker that batches their newest frames into one generator call.
* ``metrics.py``: the Prometheus text exposition of ``/metrics``.
* ``app.py``: the Starlette app (``/``, ``/healthz``, ``/metrics``, ``/v1/animate``, ``/v1/live``), its token
  check and its limits.
* ``client.py``: a Python client of the live protocol; ``ServerProcess`` runs a server in a subprocess.
* ``ray_app.py``: the Ray Serve deployment of ``fomm-serve --ray`` (replicas, each with its own engines).
* ``cli.py``: the ``fomm-serve`` command.
"""
