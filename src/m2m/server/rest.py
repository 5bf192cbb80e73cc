"""The REST server: a FastAPI app over one embedded store.

``create_app(settings)`` builds the app; its lifespan opens the store (and, when
``settings.grpc_port`` is set, starts the gRPC server over the same store) and closes
it on shutdown. Endpoints that touch the store are plain ``def`` functions, which
Starlette runs in its thread pool, so a slow search or a large write never blocks the
event loop or other requests.

Every error answer is ``{"error": {"type": "<m2m.errors class>", "message": "..."}}``
with the class's HTTP status; client mistakes are always 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from typing import Any

from m2m._optional import require

require("fastapi", "server")

from fastapi import APIRouter, Depends, FastAPI, Request, Response  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.openapi.utils import get_openapi  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse  # noqa: E402
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from m2m import __version__  # noqa: E402
from m2m.client import Client  # noqa: E402
from m2m.clients._wire import (  # noqa: E402
    REMOTE_ERROR_TYPES,
    PayloadTooLargeError,
    PermissionDeniedError,
    error_body,
    get_result_to_json,
    query_result_to_json,
)
from m2m.errors import InvalidArgumentError, M2MError  # noqa: E402
from m2m.server import schemas as s  # noqa: E402
from m2m.server.auth import KeyRing, Role  # noqa: E402
from m2m.server.metrics import CONTENT_TYPE, Metrics  # noqa: E402
from m2m.server.service import Service  # noqa: E402
from m2m.server.settings import ServerSettings  # noqa: E402

logger = logging.getLogger(__name__)

ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 500, 503, 507)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": s.ErrorResponse, "description": "Error; nothing was changed."}
    for status in ERROR_STATUSES
}
_bearer = HTTPBearer(
    auto_error=False, description="API key: 'Authorization: Bearer KEY' (when keys are set)."
)


# -- plumbing -----------------------------------------------------------------------------------


def _error(status: int, exc: M2MError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


class EncodedJSON(Response):
    """A JSON answer encoded where it is built: in the worker thread, never on the event loop.

    FastAPI would otherwise validate and ``json.dumps`` a returned dict on the event loop,
    where a large result (thousands of hits) would stall every other request. Long lists
    are encoded a slice at a time so the interpreter can switch threads in between.
    """

    media_type = "application/json"
    SLICE = 256

    def render(self, content: Any) -> bytes:
        dumps = functools.partial(json.dumps, separators=(",", ":"), allow_nan=False, ensure_ascii=False)

        def encode(value: Any) -> str:
            if isinstance(value, list) and value and isinstance(value[0], list):  # rows: one at a time
                return "[" + ",".join(encode(row) for row in value) + "]"
            if isinstance(value, list) and len(value) > self.SLICE:
                slices = (dumps(value[i : i + self.SLICE])[1:-1] for i in range(0, len(value), self.SLICE))
                return "[" + ",".join(slices) + "]"
            return dumps(value)

        return ("{" + ",".join(f"{dumps(k)}:{encode(v)}" for k, v in content.items()) + "}").encode("utf-8")


def _service(request: Request) -> Service:
    return request.app.state.service


def caller(needed: Role):
    """A dependency that authorizes the request's API key for ``needed`` and returns its role."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Role:
        ring: KeyRing = request.app.state.keyring
        return ring.authorize(credentials.credentials if credentials else None, needed)

    return dependency


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.begin("rest")
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.end("rest", scope.get("method", "?"), path, status, time.perf_counter() - start)


class BodyLimitMiddleware:
    """Answers 413 to bodies over ``max_bytes`` before the app parses anything.

    The body is read (up to the limit) here and replayed to the app; every endpoint
    reads its whole JSON body anyway, so this costs no extra copy of consequence. An
    oversize body is read and discarded (up to ``DRAIN_FACTOR`` times the limit)
    before the 413 goes out: closing a socket with unread data makes the kernel reset
    the connection, and the client would never see the answer.
    """

    DRAIN_FACTOR = 8

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, receive: Any, send: Any, status: int, exc: M2MError, *, drain: bool) -> None:
        if drain:
            budget = self.DRAIN_FACTOR * self.max_bytes
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
                budget -= len(message.get("body", b""))
        response = _error(status, exc, {"Connection": "close"})
        await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLargeError(f"request body is larger than the limit of {self.max_bytes} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await self._reject(
                        receive, send, 400, InvalidArgumentError("bad Content-Length header"), drain=False
                    )
                if declared > self.max_bytes:
                    drain = declared <= self.DRAIN_FACTOR * self.max_bytes
                    return await self._reject(receive, send, 413, too_large, drain=drain)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._reject(
                    receive, send, 413, too_large, drain=message.get("more_body", False)
                )
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(M2MError)
    async def on_m2m_error(request: Request, exc: M2MError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return _error(exc.http_status, exc, headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            if err.get("type") == "json_invalid":
                where = err.get("loc", ("body", "?"))[-1]
                problems.append(
                    f"malformed JSON body (near character {where}): {err.get('ctx', {}).get('error', '')}"
                )
                continue
            loc = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
            problems.append(f"{loc}: {err.get('msg', 'invalid')}")
        more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
        return _error(400, InvalidArgumentError("invalid request: " + "; ".join(problems) + more))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {
            404: "NotFoundError",
            401: "AuthenticationError",
            403: "PermissionDeniedError",
            413: "PayloadTooLargeError",
        }
        err = REMOTE_ERROR_TYPES[names.get(exc.status_code, "InvalidArgumentError")](str(exc.detail))
        return _error(exc.status_code, err, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, M2MError(f"internal error: {type(exc).__name__}"))


# -- routers ------------------------------------------------------------------------------------

system = APIRouter(tags=["server"], responses=ERROR_RESPONSES)
collections = APIRouter(prefix="/v1/collections", tags=["collections"], responses=ERROR_RESPONSES)
items = APIRouter(prefix="/v1/collections/{name}", tags=["items"], responses=ERROR_RESPONSES)


@system.get("/health", response_model=s.HealthResponse, summary="Liveness check (no API key needed)")
async def health() -> dict:
    return {"status": "ok", "version": __version__}


@system.get("/v1/stats", response_model=s.StatsResponse, summary="Collections, sizes and request counts")
def stats(request: Request, role: Role = Depends(caller(Role.READ))) -> dict:
    return _service(request).stats()


@system.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text exposition format 0.0.4)",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request, role: Role = Depends(caller(Role.READ))) -> PlainTextResponse:
    service = _service(request)
    return PlainTextResponse(service.metrics.render(service.collection_items()), media_type=CONTENT_TYPE)


@collections.get("", response_model=s.CollectionList, summary="List collections")
def list_collections(request: Request, role: Role = Depends(caller(Role.READ))) -> dict:
    return {"collections": _service(request).list_collections()}


@collections.post("", response_model=s.CollectionInfo, status_code=201, summary="Create a collection")
def create_collection(
    body: s.CreateCollectionRequest, request: Request, role: Role = Depends(caller(Role.READ))
) -> dict:
    service = _service(request)
    # get_or_create of an existing collection is a read; creating one needs admin.
    if role < Role.ADMIN and not (body.get_or_create and service.exists(body.name)):
        raise PermissionDeniedError(f"this API key has role {role.name.lower()!r}; creating needs 'admin'")
    return service.create_collection(body.name, body.dim, body.metric, body.metadata, body.get_or_create)


@collections.get("/{name}", response_model=s.CollectionInfo, summary="Describe a collection")
def get_collection(name: str, request: Request, role: Role = Depends(caller(Role.READ))) -> dict:
    return _service(request).get_collection(name)


@collections.patch("/{name}", response_model=s.CollectionInfo, summary="Replace a collection's metadata")
def modify_collection(
    name: str, body: s.ModifyCollectionRequest, request: Request, role: Role = Depends(caller(Role.ADMIN))
) -> dict:
    return _service(request).modify_collection(name, body.metadata)


@collections.delete(
    "/{name}", response_model=s.DeletedCollection, summary="Delete a collection and its items"
)
def delete_collection(name: str, request: Request, role: Role = Depends(caller(Role.ADMIN))) -> dict:
    _service(request).delete_collection(name)
    return {"deleted": name}


def _write(mode: str):
    def endpoint(
        name: str, body: s.WriteRequest, request: Request, role: Role = Depends(caller(Role.WRITE))
    ) -> dict:
        n = _service(request).write(name, mode, body.ids, body.embeddings, body.metadatas, body.documents)
        return {"count": n}

    endpoint.__name__ = f"{mode}_items"
    return endpoint


for _mode, _summary in (
    ("add", "Add new items (409 if an id exists)"),
    ("upsert", "Add or overwrite items"),
    ("update", "Change fields of existing items (404 if an id is missing)"),
):
    items.add_api_route(
        f"/{_mode}", _write(_mode), methods=["POST"], response_model=s.WriteResponse, summary=_summary
    )


@items.post("/delete", response_model=s.DeleteResponse, summary="Delete items by id and/or filter")
def delete_items(
    name: str, body: s.DeleteRequest, request: Request, role: Role = Depends(caller(Role.WRITE))
) -> dict:
    return {"deleted": _service(request).delete(name, body.ids, body.where, body.where_document)}


@items.post("/get", response_model=s.GetResponse, summary="Items by id and/or filter")
def get_items(
    name: str, body: s.GetRequest, request: Request, role: Role = Depends(caller(Role.READ))
) -> dict:
    result = _service(request).get(
        name, body.ids, body.where, body.limit, body.offset, body.where_document, body.include
    )
    return EncodedJSON(get_result_to_json(result))


@items.get("/count", response_model=s.CountResponse, summary="Number of items")
def count_items(name: str, request: Request, role: Role = Depends(caller(Role.READ))) -> dict:
    return {"count": _service(request).count(name)}


@items.post("/query", response_model=s.QueryResponse, summary="Nearest neighbours of each query vector")
def query(name: str, body: s.QueryRequest, request: Request, role: Role = Depends(caller(Role.READ))) -> dict:
    result = _service(request).query(
        name,
        body.query_embeddings,
        body.n_results,
        body.where,
        body.where_document,
        body.include,
        body.query_texts,
        body.options(),
    )
    return EncodedJSON(query_result_to_json(result))


@items.post("/search_text", response_model=s.QueryResponse, summary="Full-text (BM25) search over documents")
def search_text(
    name: str, body: s.SearchTextRequest, request: Request, role: Role = Depends(caller(Role.READ))
) -> dict:
    return EncodedJSON(
        query_result_to_json(
            _service(request).search_text(name, body.text, body.n_results, body.where, body.include)
        )
    )


# -- the app ------------------------------------------------------------------------------------


def _openapi(app: FastAPI) -> dict:
    """The spec, minus FastAPI's 422 answers: validation errors are 400 with the common error body."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path in spec["paths"].values():
            for operation in path.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                for status in ERROR_STATUSES:  # JSON even where the success answer is text (/metrics)
                    if str(status) in responses:
                        responses[str(status)]["content"] = error_content
        for name in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema


def _limit_blas_threads(threads: int | None) -> Any:
    """Limit BLAS threads per call (process-wide) with threadpoolctl; the limiter, to restore later."""
    if threads is None:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logger.warning(
            "threadpoolctl is not installed: set OPENBLAS_NUM_THREADS=%d for concurrent searches", threads
        )
        return None
    return threadpool_limits(limits=threads, user_api="blas")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """Open the store (and start gRPC over it); on shutdown drain gRPC, then close the store."""
    settings: ServerSettings = app.state.settings
    blas = _limit_blas_threads(settings.blas_threads)
    store = await asyncio.to_thread(Client, settings.path)
    app.state.service = Service(store, app.state.metrics, max_n_results=settings.max_n_results)
    app.state.grpc = None
    try:
        if settings.grpc_port is not None:
            from m2m.server.grpc_server import GrpcServer

            app.state.grpc = GrpcServer(app.state.service, settings, app.state.keyring)
            app.state.grpc.start()
        yield
    finally:
        if app.state.grpc is not None:
            await asyncio.to_thread(app.state.grpc.stop, settings.shutdown_grace_s)
        await asyncio.to_thread(store.close)
        logger.info("store at %s closed", settings.path)
        if blas is not None:
            blas.restore_original_limits()


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The REST app for ``settings`` (defaults: ./m2m_data, no API keys)."""
    settings = settings or ServerSettings()
    app = FastAPI(
        title="M2M vector search",
        version=__version__,
        description='REST API of an M2M store. Errors: {"error": {"type", "message"}}.',
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keyring = KeyRing(settings.api_keys)
    app.state.metrics = Metrics()
    _install_error_handlers(app)
    for router in (system, collections, items):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
