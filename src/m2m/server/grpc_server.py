"""The gRPC server (grpcio): the REST API's operations over the same :class:`Service`.

Requests arrive as raw bytes and are parsed inside the handler, so a malformed
protobuf message is answered ``INVALID_ARGUMENT`` (grpc's own deserializer would
answer ``INTERNAL``). Errors carry the m2m error class in the trailing metadata key
``m2m-error-type``; the message is the status details. Requests over
``max_body_bytes`` are refused by grpc itself with ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.clients._wire import PermissionDeniedError
from m2m.errors import InvalidArgumentError, InvalidVectorError, M2MError
from m2m.results import GetResult, QueryResult
from m2m.server.auth import KeyRing, Role, bearer_token
from m2m.server.service import Service
from m2m.server.settings import ServerSettings

grpc = require("grpc", "server")
from google.protobuf.message import DecodeError  # noqa: E402

from m2m.server._generated import m2m_pb2 as pb  # noqa: E402

logger = logging.getLogger(__name__)

SERVICE_NAME = "m2m.v1.M2M"
ERROR_TYPE_KEY = "m2m-error-type"


# -- wire helpers (shared with the gRPC client) ---------------------------------------------------


def json_field(message: Any, field: str, what: str | None = None) -> Any:
    """The decoded JSON of an ``optional string`` field, or ``None`` when it is absent."""
    if not message.HasField(field):
        return None
    try:
        return json.loads(getattr(message, field))
    except ValueError as exc:
        raise InvalidArgumentError(f"{what or field} is not valid JSON: {exc}") from None


def string_list(message: Any, field: str) -> list[str] | None:
    return list(getattr(message, field).values) if message.HasField(field) else None


def to_matrix(array: Any) -> pb.Matrix:
    """A float32 array (any shape the core accepts) as a Matrix message."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return pb.Matrix(shape=list(array.shape), data=array.tobytes())


def from_matrix(matrix: pb.Matrix, what: str) -> np.ndarray:
    shape = tuple(int(n) for n in matrix.shape)
    if len(shape) not in (1, 2):
        raise InvalidVectorError(f"{what} must have shape [n, dim] or [dim], got {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * 4
    if len(matrix.data) != expected:
        raise InvalidVectorError(
            f"{what}: {len(matrix.data)} bytes do not match shape {list(shape)} of float32"
        )
    return np.frombuffer(matrix.data, dtype="<f4").reshape(shape)


def rows_matrix(rows: list[Any]) -> pb.Matrix:
    if not rows:
        return pb.Matrix(shape=[0, 0], data=b"")
    return to_matrix(np.stack([np.asarray(r, dtype=np.float32) for r in rows]))


def encode_get(result: GetResult) -> pb.GetResponse:
    out = pb.GetResponse(ids=result["ids"])
    if result.get("embeddings") is not None:
        out.embeddings.CopyFrom(rows_matrix(result["embeddings"]))
    if result.get("metadatas") is not None:
        out.metadatas_json = json.dumps(result["metadatas"])
    if result.get("documents") is not None:
        out.documents_json = json.dumps(result["documents"])
    return out


def encode_query(result: QueryResult) -> pb.QueryResponse:
    ids = result["ids"]
    out = pb.QueryResponse(row_lengths=[len(row) for row in ids], ids=[i for row in ids for i in row])
    if result.get("distances") is not None:
        out.distances.values.extend(d for row in result["distances"] for d in row)
        out.distances.SetInParent()
    if result.get("metadatas") is not None:
        out.metadatas_json = json.dumps(result["metadatas"])
    if result.get("documents") is not None:
        out.documents_json = json.dumps(result["documents"])
    if result.get("embeddings") is not None:
        out.embeddings.CopyFrom(rows_matrix([v for row in result["embeddings"] for v in row]))
    if result.get("energies") is not None:
        out.energies.values.extend(float(e) for row in result["energies"] for e in row)
        out.energies.SetInParent()
    return out


def _info(info: dict[str, Any]) -> pb.CollectionInfo:
    out = pb.CollectionInfo(
        name=info["name"], id=info["id"], dim=info["dim"], metric=info["metric"], count=info["count"]
    )
    if info["metadata"] is not None:
        out.metadata_json = json.dumps(info["metadata"])
    return out


def _n_results(value: int) -> int:
    return value if value != 0 else 10


# -- handlers -------------------------------------------------------------------------------------


class _Handlers:
    """One method per RPC: parse the message, call the service, build the answer."""

    def __init__(self, service: Service) -> None:
        self.s = service

    def Health(self, req: pb.HealthRequest, role: Role) -> pb.HealthResponse:
        from m2m import __version__

        return pb.HealthResponse(status="ok", version=__version__)

    def Stats(self, req: pb.StatsRequest, role: Role) -> pb.StatsResponse:
        return pb.StatsResponse(json=json.dumps(self.s.stats()))

    def ListCollections(self, req: pb.ListCollectionsRequest, role: Role) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(collections=[_info(c) for c in self.s.list_collections()])

    def CreateCollection(self, req: pb.CreateCollectionRequest, role: Role) -> pb.CollectionInfo:
        if role < Role.ADMIN and not (req.get_or_create and self.s.exists(req.name)):
            raise PermissionDeniedError(
                f"this API key has role {role.name.lower()!r}; creating needs 'admin'"
            )
        metadata = json_field(req, "metadata_json")
        return _info(
            self.s.create_collection(req.name, req.dim, req.metric or None, metadata, req.get_or_create)
        )

    def GetCollection(self, req: pb.CollectionRef, role: Role) -> pb.CollectionInfo:
        return _info(self.s.get_collection(req.name))

    def ModifyCollection(self, req: pb.ModifyCollectionRequest, role: Role) -> pb.CollectionInfo:
        return _info(self.s.modify_collection(req.name, json_field(req, "metadata_json")))

    def DeleteCollection(self, req: pb.CollectionRef, role: Role) -> pb.DeleteCollectionResponse:
        self.s.delete_collection(req.name)
        return pb.DeleteCollectionResponse(deleted=req.name)

    def _write(self, mode: str, req: pb.WriteRequest) -> pb.WriteResponse:
        embeddings = from_matrix(req.embeddings, "embeddings") if req.HasField("embeddings") else None
        n = self.s.write(
            req.collection,
            mode,
            list(req.ids),
            embeddings,
            json_field(req, "metadatas_json"),
            json_field(req, "documents_json"),
        )
        return pb.WriteResponse(count=n)

    def Add(self, req: pb.WriteRequest, role: Role) -> pb.WriteResponse:
        return self._write("add", req)

    def Upsert(self, req: pb.WriteRequest, role: Role) -> pb.WriteResponse:
        return self._write("upsert", req)

    def Update(self, req: pb.WriteRequest, role: Role) -> pb.WriteResponse:
        return self._write("update", req)

    def Delete(self, req: pb.DeleteRequest, role: Role) -> pb.DeleteResponse:
        n = self.s.delete(
            req.collection,
            string_list(req, "ids"),
            json_field(req, "where_json"),
            json_field(req, "where_document_json"),
        )
        return pb.DeleteResponse(deleted=n)

    def Get(self, req: pb.GetRequest, role: Role) -> pb.GetResponse:
        result = self.s.get(
            req.collection,
            string_list(req, "ids"),
            json_field(req, "where_json"),
            req.limit if req.HasField("limit") else None,
            req.offset,
            json_field(req, "where_document_json"),
            string_list(req, "include"),
        )
        return encode_get(result)

    def Count(self, req: pb.CollectionRef, role: Role) -> pb.CountResponse:
        return pb.CountResponse(count=self.s.count(req.name))

    def Query(self, req: pb.QueryRequest, role: Role) -> pb.QueryResponse:
        queries = (
            from_matrix(req.query_embeddings, "query_embeddings")
            if req.HasField("query_embeddings")
            else None
        )
        options = {
            name: getattr(req, name) for name in ("n_probe", "lod", "target_recall") if req.HasField(name)
        }
        result = self.s.query(
            req.collection,
            queries,
            _n_results(req.n_results),
            json_field(req, "where_json"),
            json_field(req, "where_document_json"),
            string_list(req, "include"),
            string_list(req, "query_texts"),
            options,
        )
        return encode_query(result)

    def SearchText(self, req: pb.SearchTextRequest, role: Role) -> pb.QueryResponse:
        result = self.s.search_text(
            req.collection,
            req.text,
            _n_results(req.n_results),
            json_field(req, "where_json"),
            string_list(req, "include"),
        )
        return encode_query(result)


# name: (request message, response message, role the key needs)
METHODS: dict[str, tuple[type, type, Role]] = {
    "Health": (pb.HealthRequest, pb.HealthResponse, Role.READ),
    "Stats": (pb.StatsRequest, pb.StatsResponse, Role.READ),
    "ListCollections": (pb.ListCollectionsRequest, pb.ListCollectionsResponse, Role.READ),
    "CreateCollection": (pb.CreateCollectionRequest, pb.CollectionInfo, Role.READ),  # admin checked inside
    "GetCollection": (pb.CollectionRef, pb.CollectionInfo, Role.READ),
    "ModifyCollection": (pb.ModifyCollectionRequest, pb.CollectionInfo, Role.ADMIN),
    "DeleteCollection": (pb.CollectionRef, pb.DeleteCollectionResponse, Role.ADMIN),
    "Add": (pb.WriteRequest, pb.WriteResponse, Role.WRITE),
    "Upsert": (pb.WriteRequest, pb.WriteResponse, Role.WRITE),
    "Update": (pb.WriteRequest, pb.WriteResponse, Role.WRITE),
    "Delete": (pb.DeleteRequest, pb.DeleteResponse, Role.WRITE),
    "Get": (pb.GetRequest, pb.GetResponse, Role.READ),
    "Count": (pb.CollectionRef, pb.CountResponse, Role.READ),
    "Query": (pb.QueryRequest, pb.QueryResponse, Role.READ),
    "SearchText": (pb.SearchTextRequest, pb.QueryResponse, Role.READ),
}
OPEN_METHODS = frozenset({"Health"})  # answered without an API key, like GET /health


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A grpcio server over ``service``; ``start()`` binds ``settings.host:settings.grpc_port``."""

    def __init__(self, service: Service, settings: ServerSettings, keyring: KeyRing) -> None:
        self.service, self.settings, self.keyring = service, settings, keyring
        self.port: int | None = None
        self._server: Any = None
        self._stopped: threading.Event | None = None
        self._stop_lock = threading.Lock()

    def _wrap(self, name: str, request_cls: type, role: Role, fn: Callable[[Any, Role], Any]) -> Callable:
        metrics, keyring = self.service.metrics, self.keyring
        route = f"/{SERVICE_NAME}/{name}"

        def handle(raw: bytes, context: Any) -> Any:
            start = time.perf_counter()
            metrics.begin("grpc")
            code, error = "OK", None
            try:
                caller_role = Role.ADMIN
                if name not in OPEN_METHODS:
                    token = bearer_token(dict(context.invocation_metadata()).get("authorization"))
                    caller_role = keyring.authorize(token, role)
                try:
                    request = request_cls.FromString(raw)
                except (DecodeError, ValueError) as exc:
                    raise InvalidArgumentError(f"malformed {request_cls.__name__} message: {exc}") from None
                return fn(request, caller_role)
            except M2MError as exc:
                error = exc
            except Exception as exc:  # a bug, never client input: log it, answer INTERNAL
                logger.error("unexpected error in gRPC %s", name, exc_info=exc)
                error = M2MError(f"internal error: {type(exc).__name__}")
            finally:
                if error is not None:
                    code = error.grpc_code
                metrics.end("grpc", "POST", route, code, time.perf_counter() - start)
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(error).__name__),))
            context.abort(getattr(grpc.StatusCode, error.grpc_code, grpc.StatusCode.INTERNAL), error.message)

        return handle

    def start(self) -> int:
        """Bind and start; returns the bound port (useful with ``grpc_port=0``)."""
        handlers = _Handlers(self.service)
        table = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, req_cls, role, getattr(handlers, name)),
                request_deserializer=None,  # raw bytes: parsed in the handler
                response_serializer=resp_cls.SerializeToString,
            )
            for name, (req_cls, resp_cls, role) in METHODS.items()
        }
        options = [
            ("grpc.max_receive_message_length", self.settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.grpc_workers), options=options
        )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, table),))
        address = _address(self.settings.host, int(self.settings.grpc_port or 0))
        self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind the gRPC server to {address}")
        self._server.start()
        logger.info("gRPC server listening on %s", _address(self.settings.host, self.port))
        return self.port

    def begin_stop(self, grace: float) -> threading.Event:
        """Refuse new RPCs now and let running ones finish within ``grace`` seconds (idempotent)."""
        with self._stop_lock:
            if self._stopped is None:
                self._stopped = self._server.stop(grace) if self._server is not None else threading.Event()
                if self._server is None:
                    self._stopped.set()
            return self._stopped

    def stop(self, grace: float) -> None:
        """Stop and wait until running RPCs have finished."""
        self.begin_stop(grace).wait()
