"""Server settings: where the data lives, where to listen, which API keys exist.

Standard library only. API keys come from three places, merged in this order
(later ones win for the same key): the ``M2M_API_KEYS`` environment variable
(``"key1:read,key2:admin"``), a keys file (one ``KEY:ROLE`` per line, ``#`` comments),
and ``--api-key KEY:ROLE`` flags. Error messages never repeat a key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from m2m.errors import InvalidArgumentError
from m2m.server.auth import Role

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
ENV_API_KEYS = "M2M_API_KEYS"


@dataclass
class ServerSettings:
    """Everything ``m2m serve`` needs; ``grpc_port=None`` runs REST only."""

    path: Path = Path("./m2m_data")
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 9090
    api_keys: dict[str, Role] = field(default_factory=dict, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_n_results: int = 100_000
    # BLAS threads per call. Many requests run at once, each in its own thread; a BLAS that
    # also spreads every call over all cores oversubscribes them (OpenBLAS: 440 vs 6 ops/s
    # with 32 concurrent searches on 2 cores). None leaves the library's setting alone.
    blas_threads: int | None = 1
    grpc_workers: int = 32
    shutdown_grace_s: float = 30.0

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1:
            raise InvalidArgumentError(
                f"max_body_bytes must be a positive integer, got {self.max_body_bytes!r}"
            )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond this machine's loopback interface."""
        return not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_key_spec(spec: str, where: str) -> tuple[str, Role]:
    """``"KEY:ROLE"`` to ``(key, Role)``; ``where`` names the source in errors (never the key)."""
    key, sep, role = spec.strip().rpartition(":")
    if not sep or not key:
        raise InvalidArgumentError(f"API key entry in {where} must look like KEY:ROLE")
    return key, Role.parse(role, where)


def parse_key_list(text: str, where: str) -> dict[str, Role]:
    """Comma- or newline-separated ``KEY:ROLE`` entries; blank entries and ``#`` comments skipped."""
    keys: dict[str, Role] = {}
    for n, line in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            key, role = parse_key_spec(line, f"{where} (entry {n})")
            keys[key] = role
    return keys


def collect_api_keys(
    flags: list[str] | None = None,
    keys_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Role]:
    """Merge keys from the environment, a file and flags (in that order of precedence, lowest first)."""
    environ = os.environ if environ is None else environ
    keys: dict[str, Role] = {}
    if environ.get(ENV_API_KEYS):
        keys.update(parse_key_list(environ[ENV_API_KEYS], ENV_API_KEYS))
    if keys_file is not None:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read API keys file {str(keys_file)!r}: {exc.strerror}"
            ) from None
        keys.update(parse_key_list(text, f"file {str(keys_file)!r}"))
    for n, spec in enumerate(flags or [], 1):
        key, role = parse_key_spec(spec, f"--api-key #{n}")
        keys[key] = role
    return keys
