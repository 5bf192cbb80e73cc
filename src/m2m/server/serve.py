"""Run the REST and gRPC servers over one store, and stop them gracefully.

On SIGTERM or SIGINT: the gRPC server stops taking new calls at once and finishes the
running ones; uvicorn stops accepting connections and finishes the requests in
flight; then the app's lifespan waits for gRPC to drain and closes the store. The
process then exits 0. A second SIGINT forces an immediate exit.

:class:`BackgroundServer` runs the same thing in a thread (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from m2m._optional import require
from m2m.server.rest import create_app
from m2m.server.settings import ServerSettings

uvicorn = require("uvicorn", "server")

logger = logging.getLogger(__name__)

EXPOSED_WARNING = """
************************************************************************************
*  WARNING: M2M is listening on {host}, beyond this machine's loopback interface,  *
*  and NO API KEY is configured: anyone who can reach this port can read, change    *
*  and delete every collection. Set --api-key KEY:ROLE, --api-keys-file or          *
*  M2M_API_KEYS, or bind to 127.0.0.1.                                              *
************************************************************************************"""


def exposure_warning(settings: ServerSettings) -> str | None:
    """The loud warning for a server reachable from other machines without API keys, else ``None``."""
    if settings.exposed and not settings.auth_enabled:
        return EXPOSED_WARNING.format(host=settings.host)
    return None


class _Server(uvicorn.Server):
    """uvicorn's server with our signal handling: drain gRPC too, and exit 0 rather than re-raise."""

    def __init__(self, config: Any, on_signal: Any) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            logger.info(
                "received %s: finishing requests in flight, then closing the store", signal.Signals(sig).name
            )
            # grpc's stop() takes locks; never call it from inside a signal handler.
            threading.Thread(target=self._on_signal, name="m2m-grpc-drain", daemon=True).start()

        originals = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, original in originals.items():
                signal.signal(sig, original)


def _uvicorn_config(app: Any, settings: ServerSettings, *, access_log: bool, log_level: str) -> Any:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        log_config=None,  # keep the application's logging setup
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        server_header=False,
    )


def serve(settings: ServerSettings, *, access_log: bool = False, log_level: str = "info") -> int:
    """Run both servers in this thread until SIGTERM/SIGINT; returns the exit status (0 when clean)."""
    warning = exposure_warning(settings)
    if warning:
        logger.warning(warning)
    app = create_app(settings)

    def drain_grpc() -> None:
        grpc_server = getattr(app.state, "grpc", None)
        if grpc_server is not None:
            grpc_server.begin_stop(settings.shutdown_grace_s)

    server = _Server(_uvicorn_config(app, settings, access_log=access_log, log_level=log_level), drain_grpc)
    server.run()
    return 0 if server.started else 1


class BackgroundServer:
    """Both servers in a daemon thread on free loopback ports (``port=0``/``grpc_port=0`` pick one).

    ``with BackgroundServer(settings) as srv: HttpClient(srv.url); GrpcClient(srv.grpc_target)``
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def grpc_port(self) -> int | None:
        grpc_server = getattr(self.app.state, "grpc", None)
        return grpc_server.port if grpc_server is not None else None

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.host}:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))
        self.port = sock.getsockname()[1]
        config = _uvicorn_config(self.app, self.settings, access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="m2m-rest", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the M2M server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
