"""API keys with roles, checked in constant time; shared by the REST and gRPC servers.

Roles are ordered ``read < write < admin``: read may list, get, count and query;
write may also add, upsert, update and delete items; admin may also create, modify
and delete collections. With no keys configured, every request is allowed (the
default for a server bound to loopback).

Keys are compared with :func:`hmac.compare_digest` against every configured key (no
early exit), and never appear in logs, reprs or error messages.
"""

from __future__ import annotations

import enum
import hmac

from m2m.clients._wire import AuthenticationError, PermissionDeniedError
from m2m.errors import InvalidArgumentError


class Role(enum.IntEnum):
    """What a key may do; a higher role includes the lower ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str, where: str = "API key") -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown role {value.strip()!r} in {where}; use read, write or admin"
            ) from None


class KeyRing:
    """The configured keys; :meth:`authorize` turns a presented key into a role or an error."""

    def __init__(self, keys: dict[str, Role] | None = None) -> None:
        self._keys = [(key.encode("utf-8"), Role(role)) for key, role in (keys or {}).items()]

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def role_of(self, presented: str | None) -> Role | None:
        """The role of ``presented``, or ``None``; time does not depend on which key matched."""
        if presented is None:
            return None
        candidate = presented.encode("utf-8", "surrogatepass")
        found: Role | None = None
        for key, role in self._keys:
            if hmac.compare_digest(key, candidate) and found is None:
                found = role
        return found

    def authorize(self, presented: str | None, needed: Role) -> Role:
        """The caller's role if it covers ``needed``; raise 401/403 errors otherwise."""
        if not self._keys:
            return Role.ADMIN
        if not presented:
            raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>'")
        role = self.role_of(presented)
        if role is None:
            raise AuthenticationError("the API key is not valid")
        if role < needed:
            raise PermissionDeniedError(
                f"this API key has role {role.name.lower()!r}; the operation needs {needed.name.lower()!r}"
            )
        return role


def bearer_token(header: str | None) -> str | None:
    """The key from ``Authorization: Bearer KEY`` (scheme case-insensitive), else ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
