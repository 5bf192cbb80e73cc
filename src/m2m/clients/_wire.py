"""What the servers and the remote clients agree on: extra error classes and result shapes.

Standard library and NumPy only, so both sides import it without pulling in httpx,
grpc or FastAPI.

The three errors here only exist across a network (a missing or weak API key, a
body over the size limit). They follow the :mod:`m2m.errors` convention
(``http_status``, ``grpc_code``) and :data:`REMOTE_ERROR_TYPES` extends
:data:`m2m.errors.ERROR_TYPES` with them, so a client re-raises exactly the class
the server named.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from m2m import errors
from m2m.errors import M2MError
from m2m.results import GetResult, QueryResult


class AuthenticationError(M2MError):
    """No API key, or one the server does not know."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PermissionDeniedError(M2MError):
    """The API key's role does not allow this operation."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class PayloadTooLargeError(errors.InvalidArgumentError):
    """The request body is larger than the server's limit; nothing was changed."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


REMOTE_ERROR_TYPES: dict[str, type[M2MError]] = {
    **errors.ERROR_TYPES,
    "AuthenticationError": AuthenticationError,
    "PermissionDeniedError": PermissionDeniedError,
    "PayloadTooLargeError": PayloadTooLargeError,
}

# Which class to raise when a response names no (known) type: by HTTP status, by gRPC code.
_BY_HTTP_STATUS: dict[int, type[M2MError]] = {
    400: errors.InvalidArgumentError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: errors.NotFoundError,
    405: errors.InvalidArgumentError,
    409: errors.AlreadyExistsError,
    413: PayloadTooLargeError,
    422: errors.InvalidArgumentError,
}
_BY_GRPC_CODE: dict[str, type[M2MError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgumentError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "NOT_FOUND": errors.NotFoundError,
    "ALREADY_EXISTS": errors.AlreadyExistsError,
    "RESOURCE_EXHAUSTED": PayloadTooLargeError,  # grpc's own message-size limit names no type
}


def remote_error(
    type_name: str | None, message: str, *, http_status: int | None = None, grpc_code: str | None = None
) -> M2MError | None:
    """The exception a client raises for a server's error answer; ``None`` if nothing fits.

    The class named by the server wins; without one, the status decides (for answers
    from the transport itself, such as grpc's message-size limit or an unknown URL).
    """
    cls = REMOTE_ERROR_TYPES.get(type_name or "")
    if cls is None and http_status is not None:
        cls = _BY_HTTP_STATUS.get(http_status)
    if cls is None and grpc_code is not None:
        cls = _BY_GRPC_CODE.get(grpc_code)
    return cls(message) if cls is not None else None


def error_body(exc: M2MError) -> dict[str, Any]:
    """The JSON error body every server answer carries: ``{"error": {"type", "message"}}``."""
    return {"error": {"type": type(exc).__name__, "message": exc.message}}


# -- results -----------------------------------------------------------------------------------

QUERY_COLUMNS = ("ids", "distances", "metadatas", "documents", "embeddings", "energies")
GET_COLUMNS = ("ids", "embeddings", "metadatas", "documents")


def _vectors_to_lists(rows: Any) -> list[list[float]]:
    return [np.asarray(v, dtype=np.float32).tolist() for v in rows]


def get_result_to_json(result: GetResult) -> dict[str, Any]:
    """A :class:`GetResult` as plain JSON values (embeddings as lists of floats)."""
    out = {name: result.get(name) for name in GET_COLUMNS}
    if out["embeddings"] is not None:
        out["embeddings"] = _vectors_to_lists(out["embeddings"])
    return out


def query_result_to_json(result: QueryResult) -> dict[str, Any]:
    """A :class:`QueryResult` as plain JSON values; ``energies`` is ``None`` unless the core returned it."""
    out = {name: result.get(name) for name in QUERY_COLUMNS}
    if out["embeddings"] is not None:
        out["embeddings"] = [_vectors_to_lists(row) for row in out["embeddings"]]
    if out["energies"] is not None:
        out["energies"] = [[float(e) for e in row] for row in out["energies"]]
    return out


def get_result_from_json(data: dict[str, Any]) -> GetResult:
    """Rebuild a :class:`GetResult` as the embedded API returns it (embeddings as float32 arrays)."""
    result = GetResult(ids=list(data["ids"]))
    embeddings = data.get("embeddings")
    result["embeddings"] = (
        [np.asarray(v, dtype=np.float32) for v in embeddings] if embeddings is not None else None
    )
    result["metadatas"] = data.get("metadatas")
    result["documents"] = data.get("documents")
    return result


def query_result_from_json(data: dict[str, Any]) -> QueryResult:
    """Rebuild a :class:`QueryResult` as the embedded API returns it."""
    result = QueryResult(
        ids=[list(row) for row in data["ids"]],
        distances=None,
        metadatas=None,
        documents=None,
        embeddings=None,
    )
    result["distances"] = data.get("distances")
    result["metadatas"] = data.get("metadatas")
    result["documents"] = data.get("documents")
    embeddings = data.get("embeddings")
    if embeddings is not None:
        result["embeddings"] = [[np.asarray(v, dtype=np.float32) for v in row] for row in embeddings]
    if data.get("energies") is not None:
        result["energies"] = data["energies"]
    return result
