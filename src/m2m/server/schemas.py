"""Request and response bodies of the REST API (pydantic v2), which also make the OpenAPI spec.

Requests are strict (no string-to-number coercion) and forbid unknown fields, so a
typo is a 400, not a silently ignored option. Values whose rules live in the core
(metadata, filters, vectors' dimension and finiteness) are passed through for the
core to check, so the REST API raises exactly the embedded API's errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IncludeField = Literal["embeddings", "metadatas", "documents", "distances", "energy"]
Vector = list[float]
Embeddings = list[Vector] | Vector


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -------------------------------------------------------------------------------------


class ErrorDetail(_Response):
    type: str = Field(description="Name of the m2m.errors class, e.g. DimensionMismatchError.")
    message: str = Field(description="What was wrong; nothing was changed.")


class ErrorResponse(_Response):
    """Every 4xx/5xx answer has this body."""

    error: ErrorDetail


# -- collections --------------------------------------------------------------------------------


class CreateCollectionRequest(_Request):
    name: str = Field(description="1-63 letters, digits, '_', '.' or '-', starting with a letter or digit.")
    dim: int = Field(description="Vector dimension (>= 1).")
    metric: Literal["cosine", "ip", "l2"] | None = Field(
        None, description="Default cosine; with get_or_create, null accepts the existing collection's metric."
    )
    metadata: dict[str, Any] | None = None
    get_or_create: bool = Field(
        False, description="Return the collection if it exists (dim and metric must match) instead of 409."
    )


class ModifyCollectionRequest(_Request):
    metadata: dict[str, Any] | None = Field(description="Replaces the collection's metadata.")


class CollectionInfo(_Response):
    name: str
    id: str
    dim: int
    metric: str
    metadata: dict[str, Any] | None
    count: int


class CollectionList(_Response):
    collections: list[CollectionInfo]


class DeletedCollection(_Response):
    deleted: str


# -- items --------------------------------------------------------------------------------------


class WriteRequest(_Request):
    """Body of add, upsert and update: one entry per id in every list given."""

    ids: list[str] | str
    embeddings: Embeddings | None = Field(None, description="(n, dim) floats; one vector may be given flat.")
    metadatas: list[dict[str, Any] | None] | dict[str, Any] | None = None
    documents: list[str | None] | str | None = None


class WriteResponse(_Response):
    count: int = Field(description="Number of items written.")


class DeleteRequest(_Request):
    ids: list[str] | str | None = None
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None


class DeleteResponse(_Response):
    deleted: int = Field(description="Number of items deleted.")


class GetRequest(_Request):
    ids: list[str] | str | None = None
    where: dict[str, Any] | None = None
    limit: int | None = None
    offset: int = 0
    where_document: dict[str, Any] | None = None
    include: list[IncludeField] | None = Field(None, description="Default: metadatas, documents.")


class GetResponse(_Response):
    ids: list[str]
    embeddings: list[Vector] | None
    metadatas: list[dict[str, Any] | None] | None
    documents: list[str | None] | None


class CountResponse(_Response):
    count: int


class QueryRequest(_Request):
    query_embeddings: Embeddings | None = Field(None, description="(n, dim) floats, or one vector.")
    query_texts: list[str] | str | None = Field(
        None, description="Only for collections with an embedding function (none on a server)."
    )
    n_results: int = 10
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    include: list[IncludeField] | None = Field(None, description="Default: metadatas, documents, distances.")
    n_probe: int | None = Field(None, description="Index search option, when the server's core supports it.")
    lod: int | None = Field(None, description="Index level of detail, when the server's core supports it.")
    target_recall: float | None = Field(None, description="Index recall target, when supported.")

    def options(self) -> dict[str, Any]:
        return {"n_probe": self.n_probe, "lod": self.lod, "target_recall": self.target_recall}


class SearchTextRequest(_Request):
    text: str
    n_results: int = 10
    where: dict[str, Any] | None = None
    include: list[IncludeField] | None = None


class QueryResponse(_Response):
    """One list per query in every column, best first; columns not included are null."""

    ids: list[list[str]]
    distances: list[list[float]] | None
    metadatas: list[list[dict[str, Any] | None]] | None
    documents: list[list[str | None]] | None
    embeddings: list[list[Vector]] | None
    energies: list[list[float]] | None


# -- server -------------------------------------------------------------------------------------


class HealthResponse(_Response):
    status: Literal["ok"]
    version: str


class CollectionStats(_Response):
    name: str
    dim: int
    metric: str
    count: int


class StatsResponse(_Response):
    version: str
    uptime_seconds: float
    collections: list[CollectionStats]
    requests: dict[str, int] = Field(description="Requests answered so far, per transport.")
    in_flight: dict[str, int] = Field(description="Requests being processed now, per transport.")
