"""The M2M exception tree.

Every error M2M raises on purpose is an ``M2MError``. Each class knows the HTTP
status and gRPC status code that the servers answer with, and ``ERROR_TYPES``
maps class names back to classes so remote clients re-raise the server's class.

    M2MError
    ├── InvalidArgumentError (ValueError)       400 / INVALID_ARGUMENT
    │   ├── DimensionMismatchError              wrong vector length
    │   ├── InvalidVectorError                  NaN, inf, not numeric
    │   ├── InvalidIdError                      not a non-empty string
    │   ├── DuplicateIdError                    an id twice in one batch
    │   ├── InvalidMetadataError                values not JSON scalars or lists of them
    │   ├── InvalidFilterError                  malformed where / where_document
    │   └── InvalidCollectionNameError          a name that is not a safe identifier
    ├── NotFoundError (KeyError)                404 / NOT_FOUND
    │   ├── CollectionNotFoundError
    │   └── ItemNotFoundError                   update() of an id that does not exist
    ├── AlreadyExistsError                      409 / ALREADY_EXISTS
    │   ├── CollectionExistsError
    │   └── IdAlreadyExistsError                add() of an id that exists
    ├── CapacityError                           507 / RESOURCE_EXHAUSTED (max_splats reached)
    ├── StoreBusyError                          503 / UNAVAILABLE (another writer held the lock too long)
    ├── StorageError                            500 / INTERNAL (the database itself failed)
    └── IndexCorruptError                       500 / DATA_LOSS (a derived file failed its checks)
"""

from __future__ import annotations


class M2MError(Exception):
    """Root of every error M2M raises on purpose."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

    def __str__(self) -> str:  # KeyError would otherwise repr() its message
        return self.message


class InvalidArgumentError(M2MError, ValueError):
    """An argument is malformed; nothing was changed."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class DimensionMismatchError(InvalidArgumentError):
    """A vector's length differs from the collection's dimension."""


class InvalidVectorError(InvalidArgumentError):
    """A vector holds NaN, inf or non-numeric values, or has the wrong shape."""


class InvalidIdError(InvalidArgumentError):
    """An id is not a non-empty string."""


class DuplicateIdError(InvalidArgumentError):
    """The same id appears more than once in one batch."""


class InvalidMetadataError(InvalidArgumentError):
    """A metadata value is not a JSON scalar (str, int, float, bool) or a list of them."""


class InvalidFilterError(InvalidArgumentError):
    """A ``where`` or ``where_document`` filter is malformed."""


class InvalidCollectionNameError(InvalidArgumentError):
    """A collection name is empty, too long, or could escape the data folder."""


class NotFoundError(M2MError, KeyError):
    """Something that was asked for does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class CollectionNotFoundError(NotFoundError):
    """No collection has that name."""


class ItemNotFoundError(NotFoundError):
    """``update`` named an id that is not stored."""


class AlreadyExistsError(M2MError):
    """Something that must be new already exists."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class CollectionExistsError(AlreadyExistsError):
    """A collection of that name already exists."""


class IdAlreadyExistsError(AlreadyExistsError):
    """``add`` named an id that is already stored (use ``upsert`` to overwrite)."""


class CapacityError(M2MError):
    """The collection is full (``max_splats``)."""

    http_status = 507
    grpc_code = "RESOURCE_EXHAUSTED"


class StoreBusyError(M2MError):
    """Another process held the write lock for longer than the configured wait."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class StorageError(M2MError):
    """The underlying database failed (disk full, I/O error, corrupt file)."""

    http_status = 500
    grpc_code = "INTERNAL"


class IndexCorruptError(M2MError):
    """A derived index or snapshot file failed its version or checksum check."""

    http_status = 500
    grpc_code = "DATA_LOSS"


ERROR_TYPES: dict[str, type[M2MError]] = {
    cls.__name__: cls
    for cls in (
        M2MError,
        InvalidArgumentError,
        DimensionMismatchError,
        InvalidVectorError,
        InvalidIdError,
        DuplicateIdError,
        InvalidMetadataError,
        InvalidFilterError,
        InvalidCollectionNameError,
        NotFoundError,
        CollectionNotFoundError,
        ItemNotFoundError,
        AlreadyExistsError,
        CollectionExistsError,
        IdAlreadyExistsError,
        CapacityError,
        StoreBusyError,
        StorageError,
        IndexCorruptError,
    )
}
