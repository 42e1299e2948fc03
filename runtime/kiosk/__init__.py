"""Kiosk mode: the screening program as a local touchscreen web app (stdlib HTTP + server-sent events).

`serve(box_factory, store=...)` runs one ScreeningBox (runtime.screening) in a worker thread and
serves the app from this package (`static/`: HTML, CSS, JavaScript; no build step, nothing fetched
from the internet) on 127.0.0.1. Binding any other address needs an access token. `api` validates
what the browser sends, `server` owns the HTTP routes, the worker thread and the event stream.
"""

from runtime.kiosk.server import KioskConfigError, KioskServer, serve, serve_from_cli

__all__ = ["KioskConfigError", "KioskServer", "serve", "serve_from_cli"]
