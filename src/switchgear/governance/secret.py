"""The audit trail's key: an environment variable's value, or, on loopback only, a generated file.

A trail keyed with a secret that sits in the same database proves nothing, so the key never goes
into the store. In production it comes from the environment (every replica and ``switchgear
audit verify`` share it); a gateway on a non-loopback address without it refuses to start. The
loopback dev default generates 256 random bits once and keeps them beside the SQLite file (mode
0600), so ``switchgear serve`` keeps working with no setup and ``audit verify`` finds the key.

When both are there, the variable wins, for the gateway and ``audit verify`` alike (both choose
through ``AuditKey.of``): a key set on purpose beats a generated one, and a dev file left beside
a database must never override production's key. A key is named by its ``key_id``, a keyed hash
of a fixed label that reveals nothing of the key; a trail records it in its first entry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from switchgear.config import Config, ConfigError, is_loopback
from switchgear.store import SQLITE_PREFIX

log = logging.getLogger("switchgear.audit")

#: The shortest secret accepted from the environment.
MIN_SECRET_LENGTH = 32
#: The generated key file's suffix (beside the SQLite file), and its name for PostgreSQL.
KEY_SUFFIX = ".audit-key"
POSTGRES_KEY_FILE = "switchgear" + KEY_SUFFIX
#: The label whose HMAC under a key is that key's fingerprint.
FINGERPRINT_LABEL = b"switchgear audit key id"
#: Hex digits of the fingerprint shown as the key's id.
KEY_ID_LENGTH = 16


def fingerprint(secret: bytes) -> str:
    """HMAC-SHA256 of a fixed label under ``secret``, in hex: names the key without revealing
    it (a trail's first entry holds it as its previous hash)."""
    return hmac.new(secret, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def key_id(secret: bytes) -> str:
    """The short id of ``secret`` that messages show: its fingerprint's first hex digits."""
    return fingerprint(secret)[:KEY_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class AuditKey:
    """Where the key comes from: the environment's ``value``, else the file at ``path``."""

    value: bytes | None
    path: Path
    env: str

    @classmethod
    def of(cls, config: Config, *, serving: bool) -> AuditKey:
        """The key source ``config`` names. ``serving``: for a gateway, which without the
        variable must listen on loopback (ConfigError otherwise); a weak value is refused."""
        env = config.governance.audit_secret_env
        value = os.environ.get(env)
        if value is not None and len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(f"governance.audit_secret_env: {env} must hold at least "
                              f"{MIN_SECRET_LENGTH} characters")
        if value is None and serving and not is_loopback(config.server.host):
            raise ConfigError(f"governance.audit_secret_env: set {env} (at least "
                              f"{MIN_SECRET_LENGTH} characters, the same on every replica): "
                              f"the audit trail's key is required on {config.server.host}")
        return cls(value.encode() if value else None, key_path(config.store.url), env)

    @property
    def source(self) -> str:
        """Where the key comes from, in the user's words: the variable, or the key file."""
        return self.env if self.value is not None else f"the key file {self.path}"

    def overridden(self) -> bytes | None:
        """The key file's key when the variable is set and so wins over it; else None."""
        if self.value is None:
            return None
        try:
            return _read(self.path)
        except (OSError, ConfigError):
            return None

    def load(self, *, create: bool) -> bytes:
        """The key: the variable's value, else the file's, made first when ``create``."""
        if self.value is not None:
            return self.value
        try:
            return _read(self.path)
        except FileNotFoundError:
            if not create:
                raise ConfigError(f"no audit key: set {self.env}, or run where the gateway "
                                  f"keeps {self.path}") from None
        return _create(self.path, self.env)


def key_path(store_url: str) -> Path:
    """The dev key file for the store at ``store_url``: beside a SQLite file, else in the
    working directory."""
    if store_url.startswith(SQLITE_PREFIX):
        return Path(store_url.removeprefix(SQLITE_PREFIX) + KEY_SUFFIX)
    return Path(POSTGRES_KEY_FILE)


def _read(path: Path) -> bytes:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("the audit key file %s is readable by others; chmod 600 it", path)
    key = path.read_bytes().strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(f"the audit key file {path} is too short (a damaged file?)")
    return key


def _create(path: Path, env: str) -> bytes:
    """Write a new key to ``path`` (mode 0600) unless another process just did; either way,
    the key now in the file."""
    key = secrets.token_hex(32).encode()
    draft = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(key + b"\n")
        try:
            os.link(draft, path)  # atomic: of two replicas starting together, one key wins
        except FileExistsError:
            return _read(path)
    finally:
        draft.unlink(missing_ok=True)
    log.warning("generated the audit trail's key in %s (loopback dev default); in production "
                "set %s on every replica instead", path, env)
    return key
