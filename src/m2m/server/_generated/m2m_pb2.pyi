# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Matrix(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "version")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    status: str
    version: str
    def __init__(self, status: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "id", "dim", "metric", "metadata_json", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    dim: int
    metric: str
    metadata_json: str
    count: int
    def __init__(
        self,
        name: _Optional[str] = ...,
        id: _Optional[str] = ...,
        dim: _Optional[int] = ...,
        metric: _Optional[str] = ...,
        metadata_json: _Optional[str] = ...,
        count: _Optional[int] = ...,
    ) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "metric", "metadata_json", "get_or_create")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    GET_OR_CREATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    metadata_json: str
    get_or_create: bool
    def __init__(
        self,
        name: _Optional[str] = ...,
        dim: _Optional[int] = ...,
        metric: _Optional[str] = ...,
        metadata_json: _Optional[str] = ...,
        get_or_create: _Optional[bool] = ...,
    ) -> None: ...

class CollectionRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModifyCollectionRequest(_message.Message):
    __slots__ = ("name", "metadata_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    metadata_json: str
    def __init__(self, name: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: str
    def __init__(self, deleted: _Optional[str] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("collection", "ids", "embeddings", "metadatas_json", "documents_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    METADATAS_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    embeddings: Matrix
    metadatas_json: str
    documents_json: str
    def __init__(
        self,
        collection: _Optional[str] = ...,
        ids: _Optional[_Iterable[str]] = ...,
        embeddings: _Optional[_Union[Matrix, _Mapping]] = ...,
        metadatas_json: _Optional[str] = ...,
        documents_json: _Optional[str] = ...,
    ) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "where_json", "where_document_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WHERE_JSON_FIELD_NUMBER: _ClassVar[int]
    WHERE_DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: StringList
    where_json: str
    where_document_json: str
    def __init__(
        self,
        collection: _Optional[str] = ...,
        ids: _Optional[_Union[StringList, _Mapping]] = ...,
        where_json: _Optional[str] = ...,
        where_document_json: _Optional[str] = ...,
    ) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "where_json", "limit", "offset", "where_document_json", "include")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WHERE_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    WHERE_DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: StringList
    where_json: str
    limit: int
    offset: int
    where_document_json: str
    include: StringList
    def __init__(
        self,
        collection: _Optional[str] = ...,
        ids: _Optional[_Union[StringList, _Mapping]] = ...,
        where_json: _Optional[str] = ...,
        limit: _Optional[int] = ...,
        offset: _Optional[int] = ...,
        where_document_json: _Optional[str] = ...,
        include: _Optional[_Union[StringList, _Mapping]] = ...,
    ) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("ids", "embeddings", "metadatas_json", "documents_json")
    IDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    METADATAS_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    embeddings: Matrix
    metadatas_json: str
    documents_json: str
    def __init__(
        self,
        ids: _Optional[_Iterable[str]] = ...,
        embeddings: _Optional[_Union[Matrix, _Mapping]] = ...,
        metadatas_json: _Optional[str] = ...,
        documents_json: _Optional[str] = ...,
    ) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = (
        "collection",
        "query_embeddings",
        "query_texts",
        "n_results",
        "where_json",
        "where_document_json",
        "include",
        "n_probe",
        "lod",
        "target_recall",
    )
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXTS_FIELD_NUMBER: _ClassVar[int]
    N_RESULTS_FIELD_NUMBER: _ClassVar[int]
    WHERE_JSON_FIELD_NUMBER: _ClassVar[int]
    WHERE_DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    N_PROBE_FIELD_NUMBER: _ClassVar[int]
    LOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECALL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query_embeddings: Matrix
    query_texts: StringList
    n_results: int
    where_json: str
    where_document_json: str
    include: StringList
    n_probe: int
    lod: int
    target_recall: float
    def __init__(
        self,
        collection: _Optional[str] = ...,
        query_embeddings: _Optional[_Union[Matrix, _Mapping]] = ...,
        query_texts: _Optional[_Union[StringList, _Mapping]] = ...,
        n_results: _Optional[int] = ...,
        where_json: _Optional[str] = ...,
        where_document_json: _Optional[str] = ...,
        include: _Optional[_Union[StringList, _Mapping]] = ...,
        n_probe: _Optional[int] = ...,
        lod: _Optional[int] = ...,
        target_recall: _Optional[float] = ...,
    ) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("collection", "text", "n_results", "where_json", "include")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    N_RESULTS_FIELD_NUMBER: _ClassVar[int]
    WHERE_JSON_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    text: str
    n_results: int
    where_json: str
    include: StringList
    def __init__(
        self,
        collection: _Optional[str] = ...,
        text: _Optional[str] = ...,
        n_results: _Optional[int] = ...,
        where_json: _Optional[str] = ...,
        include: _Optional[_Union[StringList, _Mapping]] = ...,
    ) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class DoubleList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = (
        "row_lengths",
        "ids",
        "distances",
        "metadatas_json",
        "documents_json",
        "embeddings",
        "energies",
    )
    ROW_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    METADATAS_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ENERGIES_FIELD_NUMBER: _ClassVar[int]
    row_lengths: _containers.RepeatedScalarFieldContainer[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    distances: FloatList
    metadatas_json: str
    documents_json: str
    embeddings: Matrix
    energies: DoubleList
    def __init__(
        self,
        row_lengths: _Optional[_Iterable[int]] = ...,
        ids: _Optional[_Iterable[str]] = ...,
        distances: _Optional[_Union[FloatList, _Mapping]] = ...,
        metadatas_json: _Optional[str] = ...,
        documents_json: _Optional[str] = ...,
        embeddings: _Optional[_Union[Matrix, _Mapping]] = ...,
        energies: _Optional[_Union[DoubleList, _Mapping]] = ...,
    ) -> None: ...
