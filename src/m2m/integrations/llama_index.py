"""LlamaIndex vector store backed by an M2M collection.

Nodes are stored the way LlamaIndex's own stores do it: the node's text is the M2M
document, its id the M2M id, and ``node_to_metadata_dict`` gives the M2M metadata
(the node's JSON under ``_node_content``, plus ``ref_doc_id``/``doc_id``/``document_id``),
so ``metadata_dict_to_node`` rebuilds the exact node. User metadata values that M2M
stores natively (str, int, float, bool, flat lists of them) are also kept as top-level
metadata and are filterable; others (None, dicts) live only inside ``_node_content`` and
count as missing for filters. A ``_node_id`` key holds the id, for id filters.

Filters (``MetadataFilters``, nested, with AND / OR / NOT) follow M2M's ``where``
semantics, which extend naturally to list-valued fields: a comparison matches when
*any* value of the field does; ``NE``/``NIN`` need the field present; numbers compare
across int and float; booleans equal only booleans.

======================  =====================================================  ==========
operator                matches when the field ...                             runs in
======================  =====================================================  ==========
EQ, NE                  has / does not have the value                          M2M where
GT, GTE, LT, LTE        has a number in range (a string value: a string in      M2M where
                        lexicographic range, evaluated in Python)              (Python)
IN, NIN                 has / has none of the listed values                    M2M where
ANY                     has at least one of the listed values                  M2M where
ALL                     has every listed value                                 M2M where
CONTAINS                has the value (list membership, or equality)           M2M where
TEXT_MATCH              has a string containing the value (case-sensitive)     Python
TEXT_MATCH_INSENSITIVE  the same, case-insensitive                             Python
IS_EMPTY                is missing, ``""``, ``[]`` or a non-native value        Python
NOT (condition)         none of the sub-filters match                          Python
======================  =====================================================  ==========

Exact top-k with Python-evaluated parts: the filter is split into an M2M ``where``
(every AND branch that translates) and a Python residual. The residual is evaluated on
the metadata of every item that passes the ``where``; the ids that pass both become a
``_node_id $in`` clause of the ``where`` given to the vector (or full-text) search, so the
search still ranks exactly the matching items and returns their true top k.

Query modes: DEFAULT (exact vector search), MMR (``mmr_threshold`` is MMR's lambda,
default 0.5, over ``mmr_prefetch_k`` or ``similarity_top_k * mmr_prefetch_factor``
candidates), TEXT_SEARCH (BM25 over the node texts, ``Collection.search_text``) and
HYBRID (reciprocal rank fusion of the vector list and the BM25 list:
``score = alpha / (60 + rank_vector) + (1 - alpha) / (60 + rank_text)``, ranks from 1, an
absent item contributes 0; ``alpha`` defaults to 0.5, ``alpha = 1`` is the vector order,
``alpha = 0`` the text order). Similarities are ``1 - d`` (cosine), ``-d`` (ip, the dot
product) and ``1 - d/2`` (l2), which all equal the cosine similarity for unit vectors;
TEXT_SEARCH returns BM25 scores and HYBRID the fused scores.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m2m._optional import require

require("llama_index.core", "llamaindex")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import PrivateAttr  # noqa: E402
from llama_index.core.schema import BaseNode, MetadataMode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict  # noqa: E402

from m2m.client import Client  # noqa: E402
from m2m.collection import Collection  # noqa: E402
from m2m.errors import CollectionNotFoundError, InvalidArgumentError, InvalidFilterError  # noqa: E402
from m2m.integrations._mmr import mmr_select  # noqa: E402
from m2m.types import Metric  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["M2MEmbedding", "M2MVectorStore", "filter_matches", "plan_filters"]

NODE_ID_KEY = "_node_id"
RRF_K = 60
_INT64 = (-(2**63), 2**63)
Where = dict[str, Any]
Predicate = Callable[[dict[str, Any]], bool]


# -- metadata ------------------------------------------------------------------------------------


def _native_scalar(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value < _INT64[1]
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return False


def _native(value: Any) -> bool:
    if isinstance(value, list):
        return all(_native_scalar(v) for v in value)
    return _native_scalar(value)


def _stored_metadata(node: BaseNode) -> dict[str, Any]:
    """M2M metadata for ``node``: LlamaIndex's standard dict, with only values M2M stores natively."""
    raw = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    out = {k: v for k, v in raw.items() if isinstance(k, str) and k and not k.startswith("$") and _native(v)}
    out[NODE_ID_KEY] = node.node_id
    return out


# -- filters ---------------------------------------------------------------------------------------


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(x: Any, y: Any) -> bool:
    """M2M equality: numbers across int/float, booleans and strings only with their own kind."""
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if _is_num(x) and _is_num(y):
        return x == y
    return isinstance(x, str) and isinstance(y, str) and x == y


def _values(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


_ORDER = {
    FilterOperator.GT: ("$gt", operator.gt),
    FilterOperator.GTE: ("$gte", operator.ge),
    FilterOperator.LT: ("$lt", operator.lt),
    FilterOperator.LTE: ("$lte", operator.le),
}
_MISSING = object()


def _check_value(f: MetadataFilter) -> None:
    op, value = f.operator, f.value
    listy = op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL)
    if op == FilterOperator.IS_EMPTY:
        return
    if listy:
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(f"{op.name} on {f.key!r} takes a non-empty list, got {value!r}")
    elif value is None or isinstance(value, list):
        raise InvalidFilterError(f"{op.name} on {f.key!r} takes a single str, int or float, got {value!r}")
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE) and not isinstance(
        value, str
    ):
        raise InvalidFilterError(f"{op.name} on {f.key!r} takes a string, got {value!r}")


def _single_matches(f: MetadataFilter, meta: dict[str, Any]) -> bool:
    """Whether stored metadata ``meta`` satisfies one filter (the semantics in the module docstring)."""
    op, value = f.operator, f.value
    v = meta.get(f.key, _MISSING)
    if op == FilterOperator.IS_EMPTY:
        return v is _MISSING or v == "" or v == []
    if v is _MISSING:
        return False
    vals = _values(v)
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):
        return any(_same(x, value) for x in vals)
    if op == FilterOperator.NE:
        return not any(_same(x, value) for x in vals)
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return any(_same(x, c) for x in vals for c in value)
    if op == FilterOperator.NIN:
        return not any(_same(x, c) for x in vals for c in value)
    if op == FilterOperator.ALL:
        return all(any(_same(x, c) for x in vals) for c in value)
    if op in _ORDER:
        cmp = _ORDER[op][1]
        if isinstance(value, str):
            return any(isinstance(x, str) and cmp(x, value) for x in vals)
        return any(_is_num(x) and cmp(x, value) for x in vals)
    if op == FilterOperator.TEXT_MATCH:
        return any(isinstance(x, str) and value in x for x in vals)
    if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
        return any(isinstance(x, str) and value.lower() in x.lower() for x in vals)
    raise InvalidFilterError(f"unsupported filter operator {op!r}")


def filter_matches(filters: MetadataFilters | MetadataFilter | None, meta: dict[str, Any]) -> bool:
    """Evaluate a (nested) filter on one item's stored metadata, in Python."""
    if filters is None:
        return True
    if isinstance(filters, MetadataFilter):
        _check_value(filters)
        return _single_matches(filters, meta)
    if not filters.filters:
        return True
    hits = (filter_matches(sub, meta) for sub in filters.filters)
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all(hits)
    if condition == FilterCondition.OR:
        return any(hits)
    if condition == FilterCondition.NOT:
        return not any(hits)
    raise InvalidFilterError(f"unsupported filter condition {condition!r}")


def _single_where(f: MetadataFilter) -> Where | None:
    """The M2M ``where`` equivalent to one filter, or ``None`` when it must run in Python."""
    _check_value(f)
    op, value, key = f.operator, f.value, f.key
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):
        return {key: {"$eq": value}}
    if op == FilterOperator.NE:
        return {key: {"$ne": value}}
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return {key: {"$in": list(value)}}
    if op == FilterOperator.NIN:
        return {key: {"$nin": list(value)}}
    if op == FilterOperator.ALL:
        return {"$and": [{key: {"$eq": v}} for v in value]}
    if op in _ORDER and _is_num(value):
        return {key: {_ORDER[op][0]: value}}
    return None


def _and(parts: list[Where]) -> Where | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def plan_filters(filters: MetadataFilters | MetadataFilter | None) -> tuple[Where | None, Predicate | None]:
    """Split a filter into an M2M ``where`` and a Python predicate; their conjunction is the filter.

    ``(None, None)`` means every item matches.
    """
    if filters is None:
        return None, None
    if isinstance(filters, MetadataFilter):
        where = _single_where(filters)
        return (where, None) if where is not None else (None, lambda meta: _single_matches(filters, meta))
    if not filters.filters:
        return None, None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        wheres, preds = [], []
        for sub in filters.filters:
            w, p = plan_filters(sub)
            if w is not None:
                wheres.append(w)
            if p is not None:
                preds.append(p)
        pred = None if not preds else (lambda meta: all(p(meta) for p in preds))
        return _and(wheres), pred
    if condition == FilterCondition.OR:
        plans = [plan_filters(sub) for sub in filters.filters]
        if any(w is None and p is None for w, p in plans):
            return None, None  # one branch matches everything
        if all(p is None for _, p in plans):
            return {"$or": [w for w, _ in plans]}, None
    elif condition != FilterCondition.NOT:
        raise InvalidFilterError(f"unsupported filter condition {condition!r}")
    filter_matches(filters, {})  # validate every value now, not on the first item
    return None, lambda meta: filter_matches(filters, meta)


# -- embeddings ----------------------------------------------------------------------------------


class M2MEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model over any M2M embedding function (``texts -> (n, dim) array``).

    For example ``M2MEmbedding(m2m.embeddings.SentenceTransformerEmbeddings())`` runs the
    offline all-MiniLM-L6-v2 for ``VectorStoreIndex``.
    """

    _function: Callable[[list[str]], Any] = PrivateAttr()

    def __init__(self, function: Callable[[list[str]], Any], **kwargs: Any) -> None:
        kwargs.setdefault("model_name", str(getattr(function, "name", type(function).__name__)))
        super().__init__(**kwargs)
        self._function = function

    @classmethod
    def class_name(cls) -> str:
        return "M2MEmbedding"

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self._function(list(texts)), dtype=np.float32).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)


# -- the store ---------------------------------------------------------------------------------------


class M2MVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over one M2M collection (``stores_text = True``).

    Give ``collection`` (an open :class:`m2m.Collection`), or ``path`` / ``client`` and
    ``collection_name``; the collection is opened if it exists, else created on the first
    ``add`` with the nodes' embedding dimension and ``metric``. With none of them the store
    lives in a temporary folder removed by :meth:`close`.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    is_embedding_query: bool = True
    path: str | None = None
    collection_name: str = "llama_index"
    metric: str = "cosine"

    _client: Client | None = PrivateAttr(default=None)
    _collection: Collection | None = PrivateAttr(default=None)
    _tmpdir: str | None = PrivateAttr(default=None)
    _owns_client: bool = PrivateAttr(default=False)

    def __init__(
        self,
        collection: Collection | None = None,
        path: str | Path | None = None,
        collection_name: str = "llama_index",
        metric: str | Metric | None = None,
        *,
        client: Client | None = None,
        **kwargs: Any,
    ) -> None:
        if collection is not None and (client is not None or path is not None):
            raise InvalidArgumentError("give collection, or path/client, not both")
        wanted = Metric.parse(metric) if metric is not None else None
        if collection is not None:
            if wanted is not None and wanted is not collection.metric:
                raise InvalidArgumentError(
                    f"collection {collection.name!r} uses metric {collection.metric.value!r}"
                )
            super().__init__(
                path=None, collection_name=collection.name, metric=collection.metric.value, **kwargs
            )
            self._collection = collection
            return
        tmpdir = None
        owns = client is None
        if client is None:
            if path is None:
                tmpdir = tempfile.mkdtemp(prefix="m2m-llama-index-")
                path = tmpdir
            client = Client(path)
        try:
            existing = client.get_collection(collection_name)
        except CollectionNotFoundError:
            existing = None
        if existing is not None and wanted is not None and wanted is not existing.metric:
            raise InvalidArgumentError(
                f"collection {collection_name!r} uses metric {existing.metric.value!r}"
            )
        metric_value = existing.metric.value if existing is not None else (wanted or Metric.COSINE).value
        super().__init__(
            path=str(path) if path is not None and tmpdir is None else None,
            collection_name=collection_name,
            metric=metric_value,
            **kwargs,
        )
        self._client, self._collection, self._tmpdir, self._owns_client = client, existing, tmpdir, owns

    @classmethod
    def class_name(cls) -> str:
        return "M2MVectorStore"

    @property
    def client(self) -> Any:
        """The M2M client (or, when built from a collection, the collection)."""
        return self._client if self._client is not None else self._collection

    @property
    def collection(self) -> Collection | None:
        return self._collection

    def close(self) -> None:
        """Close the client this store opened and remove its temporary folder, if any."""
        if self._owns_client and self._client is not None:
            self._client.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _ensure_collection(self, dim: int) -> Collection:
        if self._collection is None:
            assert self._client is not None
            self._collection = self._client.get_or_create_collection(self.collection_name, dim, self.metric)
        return self._collection

    # -- writes ----------------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (each must carry an embedding); returns their ids."""
        nodes = list(nodes)
        if not nodes:
            return []
        ids = [node.node_id for node in nodes]
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        collection = self._ensure_collection(vectors.shape[1])
        collection.upsert(
            ids=ids,
            embeddings=vectors,
            metadatas=[_stored_metadata(node) for node in nodes],
            documents=[node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes],
        )
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of source document ``ref_doc_id``."""
        if self._collection is not None:
            self._collection.delete(where={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or filter (both must match when both are given); neither: nothing.

        An empty ``node_ids`` list counts as not given.
        """
        if self._collection is None or (not node_ids and filters is None):
            return
        where = self._resolve(node_ids, None, filters)
        if where is not None:
            self._collection.delete(where=where)

    def clear(self) -> None:
        """Delete every node."""
        if self._collection is not None:
            self._collection.delete(where={})

    # -- reads -----------------------------------------------------------------------------------

    def _resolve(
        self, node_ids: list[str] | None, doc_ids: list[str] | None, filters: MetadataFilters | None
    ) -> Where | None:
        """One M2M ``where`` for ids and filters; ``None`` when nothing can match, ``{}`` for all."""
        assert self._collection is not None
        # Empty id lists mean "no restriction", as in LlamaIndex's other stores: a
        # VectorStoreIndex over a text-storing store passes node_ids=[] on every query.
        parts: list[Where] = []
        if node_ids:
            parts.append({NODE_ID_KEY: {"$in": list(node_ids)}})
        if doc_ids:
            parts.append({"ref_doc_id": {"$in": list(doc_ids)}})
        where, predicate = plan_filters(filters)
        if where is not None:
            parts.append(where)
        if predicate is not None:
            pushed = _and(parts)
            found = self._collection.get(where=pushed, include=["metadatas"])
            keep = [
                i for i, meta in zip(found["ids"], found["metadatas"], strict=True) if predicate(meta or {})
            ]
            if not keep:
                return None
            parts.append({NODE_ID_KEY: {"$in": keep}})
        return _and(parts) or {}

    def _nodes(self, ids: list[str], metadatas: list, documents: list) -> list[BaseNode]:
        return [
            metadata_dict_to_node(meta or {}, text=doc)
            for _, meta, doc in zip(ids, metadatas, documents, strict=True)
        ]

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id and/or filter (all nodes when neither is given), with their embeddings."""
        if self._collection is None or (node_ids is not None and not node_ids):
            return []
        where = self._resolve(node_ids, None, filters)
        if where is None:
            return []
        res = self._collection.get(where=where or None, include=["metadatas", "documents", "embeddings"])
        nodes = self._nodes(res["ids"], res["metadatas"], res["documents"])
        for node, vector in zip(nodes, res["embeddings"], strict=True):
            node.embedding = [float(x) for x in vector]
        if node_ids is not None:
            order = {nid: i for i, nid in enumerate(node_ids)}
            nodes.sort(key=lambda n: order.get(n.node_id, len(order)))
        return nodes

    def _similarities(self, distances: list[float]) -> list[float]:
        d = np.asarray(distances, dtype=np.float64)
        metric = Metric.parse(self.metric)
        if metric is Metric.COSINE:
            s = 1.0 - d
        elif metric is Metric.IP:
            s = -d
        else:
            s = 1.0 - d / 2.0
        return s.tolist()

    def _vector_hits(self, query: VectorStoreQuery, k: int, where: Where, embeddings: bool = False) -> dict:
        if query.query_embedding is None:
            raise InvalidArgumentError(f"{query.mode.value} query needs query_embedding")
        include = ["metadatas", "documents", "distances"] + (["embeddings"] if embeddings else [])
        res = self._collection.query(  # type: ignore[union-attr]
            query_embeddings=np.asarray(query.query_embedding, dtype=np.float32),
            n_results=k,
            where=where or None,
            include=include,
        )
        return {key: (value[0] if value is not None else None) for key, value in res.items()}

    def _text_hits(self, query: VectorStoreQuery, k: int, where: Where) -> dict:
        if not query.query_str:
            raise InvalidArgumentError(f"{query.mode.value} query needs query_str")
        res = self._collection.search_text(  # type: ignore[union-attr]
            query.query_str, n_results=k, where=where or None, include=["metadatas", "documents", "distances"]
        )
        return {key: (value[0] if value is not None else None) for key, value in res.items()}

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes for the query's mode, ids and filters."""
        empty = VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if self._collection is None:
            return empty
        where = self._resolve(query.node_ids, query.doc_ids, query.filters)
        if where is None:
            return empty
        k = int(query.similarity_top_k)
        if k < 1:
            raise InvalidArgumentError(f"similarity_top_k must be >= 1, got {k}")
        mode = query.mode
        if mode == VectorStoreQueryMode.DEFAULT:
            hits = self._vector_hits(query, k, where)
            sims = self._similarities(hits["distances"])
        elif mode == VectorStoreQueryMode.MMR:
            hits, sims = self._mmr(query, k, where, kwargs)
        elif mode == VectorStoreQueryMode.TEXT_SEARCH:
            hits = self._text_hits(query, query.sparse_top_k or k, where)
            sims = [-d for d in hits["distances"]]
        elif mode == VectorStoreQueryMode.HYBRID:
            hits, sims = self._hybrid(query, k, where)
        else:
            raise InvalidArgumentError(
                f"query mode {mode.value!r} is not supported; use default, mmr, text_search or hybrid"
            )
        nodes = self._nodes(hits["ids"], hits["metadatas"], hits["documents"])
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=list(hits["ids"]))

    def _mmr(self, query: VectorStoreQuery, k: int, where: Where, kwargs: dict) -> tuple[dict, list[float]]:
        lambda_mult = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
        lambda_mult = 0.5 if lambda_mult is None else float(lambda_mult)
        prefetch = kwargs.get("mmr_prefetch_k") or int(k * float(kwargs.get("mmr_prefetch_factor", 4.0)))
        hits = self._vector_hits(query, max(prefetch, k), where, embeddings=True)
        if not hits["ids"]:
            return hits, []
        chosen = mmr_select(np.asarray(query.query_embedding), np.stack(hits["embeddings"]), k, lambda_mult)
        picked = {
            key: [hits[key][i] for i in chosen] for key in ("ids", "metadatas", "documents", "distances")
        }
        return picked, self._similarities(picked["distances"])

    def _hybrid(self, query: VectorStoreQuery, k: int, where: Where) -> tuple[dict, list[float]]:
        alpha = 0.5 if query.alpha is None else float(query.alpha)
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgumentError(f"alpha must be in [0, 1], got {alpha}")
        vector = self._vector_hits(query, k, where)
        text = self._text_hits(query, query.sparse_top_k or k, where)
        scores: dict[str, float] = {}
        first_seen: dict[str, int] = {}
        rows: dict[str, tuple[Any, Any]] = {}
        for weight, hits in ((alpha, vector), (1.0 - alpha, text)):
            for rank, (i, meta, doc) in enumerate(
                zip(hits["ids"], hits["metadatas"], hits["documents"], strict=True)
            ):
                scores[i] = scores.get(i, 0.0) + weight / (RRF_K + rank + 1)
                first_seen.setdefault(i, len(first_seen))
                rows[i] = (meta, doc)
        order = sorted(scores, key=lambda i: (-scores[i], first_seen[i]))[: query.hybrid_top_k or k]
        fused = {
            "ids": order,
            "metadatas": [rows[i][0] for i in order],
            "documents": [rows[i][1] for i in order],
        }
        return fused, [scores[i] for i in order]

    # -- async (the collection is synchronous and thread-safe: run it in a worker thread) ------

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
