"""Shared helpers for the server tests: in-process REST + gRPC servers on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from m2m.server.serve import BackgroundServer
from m2m.server.settings import ServerSettings


@contextlib.contextmanager
def running_server(path: Path, **settings: Any) -> Iterator[BackgroundServer]:
    """Both servers over the store at ``path``, on ports the OS picks, stopped (store closed) on exit."""
    settings.setdefault("port", 0)
    settings.setdefault("grpc_port", 0)
    with BackgroundServer(ServerSettings(path=path, host="127.0.0.1", **settings)) as server:
        yield server
