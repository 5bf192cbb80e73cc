"""M2M servers: REST (FastAPI) and gRPC over one embedded store.

Nothing heavy is imported here; ``pip install 'm2m-vector-search[server]'`` provides
FastAPI, uvicorn and grpcio, which :mod:`m2m.server.rest`, :mod:`m2m.server.grpc_server`
and :mod:`m2m.server.serve` import.

    from m2m.server import ServerSettings, serve
    serve(ServerSettings(path="./m2m_data", port=8080, grpc_port=9090))
"""

from __future__ import annotations

from typing import Any

from m2m.server.settings import ServerSettings


def create_app(settings: ServerSettings | None = None) -> Any:
    """The FastAPI app (see :func:`m2m.server.rest.create_app`)."""
    from m2m.server.rest import create_app as _create_app

    return _create_app(settings)


def serve(settings: ServerSettings) -> int:
    """Run REST and gRPC until SIGTERM or SIGINT (see :func:`m2m.server.serve.serve`)."""
    from m2m.server.serve import serve as _serve

    return _serve(settings)


__all__ = ["ServerSettings", "create_app", "serve"]
