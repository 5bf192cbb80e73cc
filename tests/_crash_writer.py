"""The writer process of the crash-safety test; also the deterministic batch generator it shares.

Run as ``python _crash_writer.py PATH SEED START``: opens the store, reads its current
contents as the model, then applies batches START, START+1, ... forever, printing and
flushing ``ack <batch>`` after each call returns. The test kills it with SIGKILL.

Each batch is one M2M call (add, upsert, update, delete by ids or delete by where),
derived only from ``(seed, batch number, current contents)``, so the test can replay
the same batches on a plain dict and know exactly what the store must hold.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

DIM = 16
COLLECTION = "crash"
KEEP_BATCHES = 25  # every 5th batch deletes items older than this many batches

Model = dict[str, tuple[bytes, dict | None, str | None]]  # id -> (float32 bytes, metadata, document)


@dataclass
class Batch:
    number: int
    kind: str  # add | upsert | update | delete | delete_where
    ids: list[str]
    vectors: np.ndarray | None = None
    metadatas: list[dict | None] | None = None
    documents: list[str | None] | None = None
    where: dict | None = None


def _document(rng: random.Random, b: int, j: int) -> str | None:
    if rng.random() < 0.1:
        return None
    words = rng.sample(["alpha", "Beta", "gamma", 'say "hi"', "it's", "naïve", "x", "yz"], 2)
    return f"doc {b}-{j} marker{b} {' '.join(words)}"


def _metadata(rng: random.Random, b: int, j: int) -> dict | None:
    return {"batch": b, "j": j, "odd": bool(j % 2), "w": rng.choice([0.5, 1.5, -2.0]), "tags": [f"t{j % 3}"]}


def make_batch(seed: int, b: int, model: Model) -> Batch:
    """Batch ``b``: a pure function of the seed, the batch number and the current contents."""
    rng = random.Random(f"{seed}-{b}")
    vrng = np.random.default_rng([seed, b])
    existing = sorted(model)
    kind = ("add", "upsert", "update", "delete", "delete_where")[b % 5]
    if kind == "add":
        ids = [f"b{b}-{j}" for j in range(30)]
    elif kind == "upsert":
        ids = rng.sample(existing, min(15, len(existing))) + [f"b{b}-{j}" for j in range(15)]
    elif kind == "update":
        ids = rng.sample(existing, min(10, len(existing)))
    elif kind == "delete":
        ids = [*rng.sample(existing, min(10, len(existing))), f"missing{b}"]
        return Batch(b, kind, ids)
    else:
        return Batch(b, kind, [], where={"batch": {"$lt": b - KEEP_BATCHES}})
    if not ids:  # update with nothing stored yet: upsert fresh ids instead
        kind, ids = "upsert", [f"b{b}-{j}" for j in range(5)]
    n = len(ids)
    vectors = vrng.standard_normal((n, DIM)).astype(np.float32)
    metadatas = [_metadata(rng, b, j) for j in range(n)]
    documents = [_document(rng, b, j) for j in range(n)]
    return Batch(b, kind, ids, vectors, metadatas, documents)


def _matches(meta: dict | None, where: dict) -> bool:
    ((field, ops),) = where.items()
    ((op, operand),) = ops.items()
    assert op == "$lt"
    value = (meta or {}).get(field)
    return isinstance(value, int | float) and not isinstance(value, bool) and value < operand


def apply_to_model(batch: Batch, model: Model) -> None:
    """What the batch does to the plain-dict model (the oracle)."""
    if batch.kind == "delete":
        for item_id in batch.ids:
            model.pop(item_id, None)
    elif batch.kind == "delete_where":
        for item_id in [i for i, (_, meta, _) in model.items() if _matches(meta, batch.where)]:
            del model[item_id]
    else:  # add, upsert, update: every field is given
        for j, item_id in enumerate(batch.ids):
            model[item_id] = (batch.vectors[j].tobytes(), batch.metadatas[j], batch.documents[j])


def apply_to_collection(batch: Batch, collection: Any) -> None:
    if batch.kind == "delete":
        collection.delete(ids=batch.ids)
    elif batch.kind == "delete_where":
        collection.delete(where=batch.where)
    else:
        getattr(collection, batch.kind)(
            ids=batch.ids, embeddings=batch.vectors, metadatas=batch.metadatas, documents=batch.documents
        )


def model_from_collection(collection: Any) -> Model:
    got = collection.get(include=["embeddings", "metadatas", "documents"])
    return {
        item_id: (np.asarray(emb, dtype=np.float32).tobytes(), meta, doc)
        for item_id, emb, meta, doc in zip(
            got["ids"], got["embeddings"], got["metadatas"], got["documents"], strict=True
        )
    }


def main() -> None:
    import m2m

    path, seed, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = m2m.Client(path)
    collection = client.get_or_create_collection(COLLECTION, dim=DIM, metric="l2")
    model = model_from_collection(collection)
    print("ready", flush=True)
    b = start
    while True:
        batch = make_batch(seed, b, model)
        apply_to_collection(batch, collection)
        print(f"ack {b}", flush=True)
        apply_to_model(batch, model)
        b += 1


if __name__ == "__main__":
    main()
