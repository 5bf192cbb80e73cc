"""``GrpcClient``: the :class:`m2m.Client` interface over gRPC (grpcio).

Vectors travel as float32 bytes (see ``proto/m2m.proto``); metadata, filters and
documents as JSON strings. Errors carry the server's m2m error class in the
trailing metadata and are re-raised as that class. Transport failures (server
unreachable) stay ``grpc.RpcError``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.clients._remote import RemoteClient
from m2m.clients._wire import remote_error
from m2m.errors import InvalidArgumentError
from m2m.results import GetResult, QueryResult

grpc = require("grpc", "client")

from m2m.server._generated import m2m_pb2 as pb  # noqa: E402

SERVICE = "/m2m.v1.M2M/"
ERROR_TYPE_KEY = "m2m-error-type"

_RESPONSES = {
    "Health": pb.HealthResponse,
    "Stats": pb.StatsResponse,
    "ListCollections": pb.ListCollectionsResponse,
    "CreateCollection": pb.CollectionInfo,
    "GetCollection": pb.CollectionInfo,
    "ModifyCollection": pb.CollectionInfo,
    "DeleteCollection": pb.DeleteCollectionResponse,
    "Add": pb.WriteResponse,
    "Upsert": pb.WriteResponse,
    "Update": pb.WriteResponse,
    "Delete": pb.DeleteResponse,
    "Get": pb.GetResponse,
    "Count": pb.CountResponse,
    "Query": pb.QueryResponse,
    "SearchText": pb.QueryResponse,
}


def _matrix(array: np.ndarray) -> pb.Matrix:
    array = np.ascontiguousarray(array, dtype="<f4")
    return pb.Matrix(shape=list(array.shape), data=array.tobytes())


def _rows(matrix: pb.Matrix) -> list[np.ndarray]:
    shape = tuple(matrix.shape)
    if not shape or shape[0] == 0:
        return []
    array = np.frombuffer(matrix.data, dtype="<f4").reshape(shape)
    return [row.copy() for row in array]


def _set_json(message: Any, **fields: Any) -> None:
    for name, value in fields.items():
        if value is not None:
            setattr(message, name, json.dumps(value))


def _info(msg: pb.CollectionInfo) -> dict[str, Any]:
    return {
        "name": msg.name,
        "id": msg.id,
        "dim": msg.dim,
        "metric": msg.metric,
        "count": msg.count,
        "metadata": json.loads(msg.metadata_json) if msg.HasField("metadata_json") else None,
    }


def _split(flat: list[Any], lengths: list[int]) -> list[list[Any]]:
    out, start = [], 0
    for n in lengths:
        out.append(flat[start : start + n])
        start += n
    return out


def decode_query(msg: pb.QueryResponse) -> QueryResult:
    lengths = list(msg.row_lengths)
    result = QueryResult(
        ids=_split(list(msg.ids), lengths), distances=None, metadatas=None, documents=None, embeddings=None
    )
    if msg.HasField("distances"):
        result["distances"] = _split([float(d) for d in msg.distances.values], lengths)
    if msg.HasField("metadatas_json"):
        result["metadatas"] = json.loads(msg.metadatas_json)
    if msg.HasField("documents_json"):
        result["documents"] = json.loads(msg.documents_json)
    if msg.HasField("embeddings"):
        result["embeddings"] = _split(_rows(msg.embeddings), lengths)
    if msg.HasField("energies"):
        result["energies"] = _split(list(msg.energies.values), lengths)
    return result


def decode_get(msg: pb.GetResponse) -> GetResult:
    result = GetResult(ids=list(msg.ids))
    result["embeddings"] = _rows(msg.embeddings) if msg.HasField("embeddings") else None
    result["metadatas"] = json.loads(msg.metadatas_json) if msg.HasField("metadatas_json") else None
    result["documents"] = json.loads(msg.documents_json) if msg.HasField("documents_json") else None
    return result


class GrpcTransport:
    """Unary calls on one channel (thread-safe, multiplexed over HTTP/2)."""

    def __init__(self, target: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._calls = {
            name: self._channel.unary_unary(
                SERVICE + name,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=resp.FromString,
            )
            for name, resp in _RESPONSES.items()
        }
        self.target = target

    def __repr__(self) -> str:  # never show the key
        return f"GrpcTransport({self.target!r})"

    def _call(self, name: str, request: Any) -> Any:
        try:
            return self._calls[name](request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            trailing = dict(exc.trailing_metadata() or ())
            error = remote_error(trailing.get(ERROR_TYPE_KEY), exc.details() or "", grpc_code=exc.code().name)
            if error is None:
                raise
            raise error from None

    def health(self) -> dict[str, Any]:
        msg = self._call("Health", pb.HealthRequest())
        return {"status": msg.status, "version": msg.version}

    def stats(self) -> dict[str, Any]:
        return json.loads(self._call("Stats", pb.StatsRequest()).json)

    def list_collections(self) -> list[dict[str, Any]]:
        return [_info(c) for c in self._call("ListCollections", pb.ListCollectionsRequest()).collections]

    def create_collection(
        self, name: str, dim: int, metric: str | None, metadata: Any, get_or_create: bool
    ) -> dict[str, Any]:
        req = pb.CreateCollectionRequest(name=name, dim=dim, metric=metric or "", get_or_create=get_or_create)
        _set_json(req, metadata_json=metadata)
        return _info(self._call("CreateCollection", req))

    def get_collection(self, name: str) -> dict[str, Any]:
        return _info(self._call("GetCollection", pb.CollectionRef(name=name)))

    def modify_collection(self, name: str, metadata: Any) -> dict[str, Any]:
        req = pb.ModifyCollectionRequest(name=name)
        _set_json(req, metadata_json=metadata)
        return _info(self._call("ModifyCollection", req))

    def delete_collection(self, name: str) -> None:
        self._call("DeleteCollection", pb.CollectionRef(name=name))

    def write(
        self,
        mode: str,
        name: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: Any,
        documents: Any,
    ) -> int:
        req = pb.WriteRequest(collection=name, ids=ids)
        if embeddings is not None:
            req.embeddings.CopyFrom(_matrix(embeddings))
        _set_json(req, metadatas_json=metadatas, documents_json=documents)
        return self._call(mode.capitalize(), req).count

    def delete(self, name: str, ids: list[str] | None, where: Any, where_document: Any) -> int:
        req = pb.DeleteRequest(collection=name)
        if ids is not None:
            req.ids.values.extend(ids)
            req.ids.SetInParent()
        _set_json(req, where_json=where, where_document_json=where_document)
        return self._call("Delete", req).deleted

    def get(
        self,
        name: str,
        ids: list[str] | None,
        where: Any,
        limit: int | None,
        offset: int,
        where_document: Any,
        include: list[str] | None,
    ) -> GetResult:
        req = pb.GetRequest(collection=name, offset=offset)
        if ids is not None:
            req.ids.values.extend(ids)
            req.ids.SetInParent()
        if limit is not None:
            req.limit = limit
        if include is not None:
            req.include.values.extend(include)
            req.include.SetInParent()
        _set_json(req, where_json=where, where_document_json=where_document)
        return decode_get(self._call("Get", req))

    def count(self, name: str) -> int:
        return self._call("Count", pb.CollectionRef(name=name)).count

    def query(
        self,
        name: str,
        queries: np.ndarray | None,
        n_results: int,
        where: Any,
        where_document: Any,
        include: list[str] | None,
        query_texts: list[str] | None,
        options: dict[str, Any],
    ) -> QueryResult:
        req = pb.QueryRequest(collection=name, n_results=n_results)
        if queries is not None:
            req.query_embeddings.CopyFrom(_matrix(queries))
        if query_texts is not None:
            req.query_texts.values.extend(query_texts)
            req.query_texts.SetInParent()
        if include is not None:
            req.include.values.extend(include)
            req.include.SetInParent()
        _set_json(req, where_json=where, where_document_json=where_document)
        for key, value in options.items():
            if value is None:
                continue
            if key not in ("n_probe", "lod", "target_recall"):
                raise InvalidArgumentError(f"query option {key!r} is not supported by this server")
            try:
                setattr(req, key, value)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"query option {key!r}: {exc}") from None
        return decode_query(self._call("Query", req))

    def search_text(
        self, name: str, text: str, n_results: int, where: Any, include: list[str] | None
    ) -> QueryResult:
        req = pb.SearchTextRequest(collection=name, text=text, n_results=n_results)
        if include is not None:
            req.include.values.extend(include)
            req.include.SetInParent()
        _set_json(req, where_json=where)
        return decode_query(self._call("SearchText", req))

    def close(self) -> None:
        self._channel.close()


class GrpcClient(RemoteClient):
    """An M2M server's collections over gRPC: ``GrpcClient("127.0.0.1:9090", api_key=None)``."""

    def __init__(
        self, target: str = "127.0.0.1:9090", api_key: str | None = None, *, timeout: float = 120.0
    ) -> None:
        super().__init__(GrpcTransport(target, api_key, timeout))
        self.target = target

    def __repr__(self) -> str:
        return f"GrpcClient({self.target!r})"
