"""Small shared value types: metrics and the ``include`` fields."""

from __future__ import annotations

import enum

from m2m.errors import InvalidArgumentError


class Metric(str, enum.Enum):
    """Distance of a collection; smaller is closer for all three.

    - ``cosine``: ``1 - cos(q, x)``; vectors are L2-normalised for search.
    - ``ip``: ``-(q · x)``, the negative inner product.
    - ``l2``: ``||q - x||²``, the squared Euclidean distance.
    """

    COSINE = "cosine"
    IP = "ip"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InvalidArgumentError(f"unknown metric {value!r}; choose one of {choices}") from None


class Include(str, enum.Enum):
    """Fields a ``get`` or ``query`` may return besides ids."""

    EMBEDDINGS = "embeddings"
    METADATAS = "metadatas"
    DOCUMENTS = "documents"
    DISTANCES = "distances"
    ENERGY = "energy"

    @classmethod
    def parse_many(cls, values, *, allowed: frozenset[Include]) -> frozenset[Include]:
        if isinstance(values, (str, Include)):
            values = [values]
        out = set()
        for value in values:
            try:
                item = cls(value)
            except ValueError:
                names = ", ".join(sorted(i.value for i in allowed))
                raise InvalidArgumentError(f"unknown include field {value!r}; choose from {names}") from None
            if item not in allowed:
                names = ", ".join(sorted(i.value for i in allowed))
                raise InvalidArgumentError(
                    f"include field {item.value!r} is not valid here; choose from {names}"
                )
            out.add(item)
        return frozenset(out)


GET_INCLUDE_DEFAULT = frozenset({Include.METADATAS, Include.DOCUMENTS})
QUERY_INCLUDE_DEFAULT = frozenset({Include.METADATAS, Include.DOCUMENTS, Include.DISTANCES})
GET_INCLUDE_ALLOWED = frozenset({Include.EMBEDDINGS, Include.METADATAS, Include.DOCUMENTS})
QUERY_INCLUDE_ALLOWED = frozenset(Include)
