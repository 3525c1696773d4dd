"""Envelope encryption of personal data, and the keys on disk.

* One AES-256-GCM **data key** per data subject (customer account), stored in
  ``tsuchi_data_keys`` only wrapped by the **key-encryption key** (KEK).
* The KEK lives outside the database: a key file or environment variable,
  reached through the :class:`~tsuchi.ports.KeyEncryptionKey` port
  (:class:`LocalKMS` here; a cloud KMS in production).
* Associated data binds each ciphertext to its subject, event and field, so a
  ciphertext moved anywhere else fails authentication.
* Erasure destroys the subject's wrapped keys: what remains cannot be
  decrypted by anyone, with or without the KEK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from threading import Lock
from typing import Any, cast
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import CursorResult, bindparam, insert, select, update
from sqlalchemy.orm import Session

from tsuchi.errors import CiphertextRejected, KeyMaterialError
from tsuchi.infrastructure.expiring import ExpiringMap
from tsuchi.infrastructure.tables import data_keys
from tsuchi.ports import KeyEncryptionKey

NONCE = 12

SessionFactory = Callable[[bool], AbstractContextManager[Session]]
"""``factory(commit)`` gives the current unit of work's session (joined if open)."""


class LocalKMS:
    """A KEK held in this process (loaded from a key file or the environment)."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise KeyMaterialError("the KEK must be 32 bytes (AES-256)")
        self._aead = AESGCM(kek)
        self._key_id = hashlib.sha256(b"tsuchi-kek-id\0" + kek).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag:
            raise KeyMaterialError(
                "a data key failed to unwrap: the KEK is wrong for this database"
            ) from None


# -- key files -------------------------------------------------------------------

KEK_FILE = "kek.key"
INDEX_FILE = "index.key"
SIGNING_FILE = "audit-signing.key"


@dataclass(frozen=True)
class KeyRing:
    """The secrets that live outside the database."""

    kek: KeyEncryptionKey
    index_key: bytes
    signing_key: Ed25519PrivateKey
    directory: Path | None = None


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(data) + b"\n")


def _read_secret(path: Path, size: int) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMaterialError(f"key file missing: {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(f"key file {path} is readable by group or others; chmod 600 it")
    try:
        data = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError:
        raise KeyMaterialError(f"key file {path} is not base64") from None
    if len(data) != size:
        raise KeyMaterialError(f"key file {path} must hold {size} bytes")
    return data


def init_keys(
    directory: Path, *, only_missing: bool = False, with_kek: bool = True
) -> list[Path]:
    """Create new key files (mode 0600) in ``directory`` (mode 0700).

    Refuses to overwrite an existing key unless ``only_missing`` (then it
    creates just the absent ones).  ``with_kek=False`` writes no ``kek.key``
    (the KEK is injected).  Returns the files written.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    wanted: dict[str, Callable[[], bytes]] = {
        KEK_FILE: lambda: AESGCM.generate_key(bit_length=256),
        INDEX_FILE: lambda: os.urandom(32),
        SIGNING_FILE: lambda: Ed25519PrivateKey.generate().private_bytes_raw(),
    }
    written = []
    if not with_kek:
        del wanted[KEK_FILE]
    for name, make in wanted.items():
        path = directory / name
        if path.exists():
            if only_missing:
                continue
            raise KeyMaterialError(f"refusing to overwrite existing key file {path}")
        _write_secret(path, make())
        written.append(path)
    return written


def check_key_directory(directory: Path) -> None:
    """Refuse a key directory that group or others may enter or change (one
    who can write it can swap a key file); like key files, it is 0700."""
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        raise KeyMaterialError(f"key directory missing: {directory}") from None
    if not stat.S_ISDIR(mode):
        raise KeyMaterialError(f"key directory {directory} is not a directory")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(
            f"key directory {directory} is open to group or others; chmod 700 it"
        )


def load_keys(directory: Path, kek_override: bytes | None = None) -> KeyRing:
    """The key ring from ``directory``; ``kek_override`` (an injected KEK, as
    from ``TSUCHI_KEK``) stands for ``kek.key``, which then need not exist."""
    check_key_directory(directory)
    kek = kek_override if kek_override is not None else _read_secret(directory / KEK_FILE, 32)
    return KeyRing(
        kek=LocalKMS(kek),
        index_key=_read_secret(directory / INDEX_FILE, 32),
        signing_key=Ed25519PrivateKey.from_private_bytes(
            _read_secret(directory / SIGNING_FILE, 32)
        ),
        directory=directory,
    )


NEXT_KEK_FILE = KEK_FILE + ".next"
OLD_KEK_FILE = KEK_FILE + ".old"


def stage_new_kek(directory: Path) -> LocalKMS:
    """First step of KEK rotation: write a new KEK to ``kek.key.next``."""
    path = directory / NEXT_KEK_FILE
    if path.exists():
        path.unlink()
    new = AESGCM.generate_key(bit_length=256)
    _write_secret(path, new)
    return LocalKMS(new)


def staged_kek(directory: Path) -> LocalKMS | None:
    path = directory / NEXT_KEK_FILE
    return LocalKMS(_read_secret(path, 32)) if path.exists() else None


def promote_staged_kek(directory: Path) -> None:
    """Last step of KEK rotation, once the database is re-wrapped: the staged
    KEK becomes ``kek.key``, the previous one ``kek.key.old``."""
    old = directory / OLD_KEK_FILE
    if old.exists():
        old.unlink()
    (directory / KEK_FILE).replace(old)
    (directory / NEXT_KEK_FILE).replace(directory / KEK_FILE)


def blind_index(index_key: bytes, kind: str, value: str) -> str:
    """Keyed HMAC-SHA256 of a normalised personal value, for look-ups."""
    return hmac.new(index_key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()


# -- data keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sealed:
    """A personal value as stored: ciphertext under one subject's data key."""

    subject: UUID
    key_version: int
    blob: bytes  # nonce || ciphertext+tag


def _wrap_aad(subject: UUID, version: int) -> bytes:
    return b"tsuchi-dek/v1\0" + subject.bytes + version.to_bytes(4, "big")


def _field_aad(subject: UUID, context: str) -> bytes:
    return b"tsuchi-pii/v1\0" + subject.bytes + b"\0" + context.encode()


_CURRENT_VERSION = (
    select(data_keys.c.key_version)
    .where(data_keys.c.subject_id == bindparam("subject"))
    .order_by(data_keys.c.key_version.desc())
    .limit(1)
)
_WRAPPED = select(data_keys.c.wrapped).where(
    data_keys.c.subject_id == bindparam("subject"),
    data_keys.c.key_version == bindparam("version"),
)


class DataKeyStore:
    """Per-subject data keys in the database, wrapped by the KEK, cached in memory.

    ``session`` is a callable giving the current unit-of-work's SQLAlchemy
    session context, so key writes commit or roll back with the events.
    """

    ERASED = object()

    def __init__(
        self,
        kek: KeyEncryptionKey,
        session: SessionFactory,
        ttl: float | None = None,
        max_entries: int = 100_000,
    ) -> None:
        self.kek = kek
        self._session = session
        self._lock = Lock()
        # Unwrapped keys stay in memory at most ``ttl`` seconds: after an erasure
        # made by another process, this one stops decrypting within that time.
        self._cache: ExpiringMap[tuple[UUID, int], AESGCM | object] = ExpiringMap(ttl, max_entries)
        self._current: ExpiringMap[UUID, int] = ExpiringMap(ttl, max_entries)

    # writes
    def create(self, subject: UUID, at: datetime, version: int = 1) -> None:
        key = AESGCM.generate_key(bit_length=256)
        wrapped = self.kek.wrap(key, _wrap_aad(subject, version))
        with self._session(True) as s:
            s.execute(
                insert(data_keys).values(
                    subject_id=subject.hex,
                    key_version=version,
                    wrapped=wrapped,
                    kek_id=self.kek.key_id,
                    created_at=at,
                )
            )
        with self._lock:
            self._cache.set((subject, version), AESGCM(key))
            self._current.set(subject, version)

    def rotate_subject(self, subject: UUID, at: datetime) -> int:
        version = self.current_version(subject) + 1
        self.create(subject, at, version)
        return version

    def erase(self, subject: UUID, at: datetime) -> int:
        """Destroy every data key of ``subject``; returns how many."""
        with self._session(True) as s:
            result = s.execute(
                update(data_keys)
                .where(data_keys.c.subject_id == subject.hex, data_keys.c.wrapped.is_not(None))
                .values(wrapped=None, erased_at=at)
            )
            n = cast("CursorResult[Any]", result).rowcount
        self.forget(subject)
        return int(n)

    def forget(self, subject: UUID) -> None:
        with self._lock:
            for k in [k for k in self._cache.keys() if k[0] == subject]:
                self._cache.pop(k)
            self._current.pop(subject)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._current.clear()

    def rewrap_all(self, new_kek: KeyEncryptionKey, batch: int = 1000) -> int:
        """Re-wrap every live data key under ``new_kek`` (events untouched)."""
        n = 0
        with self._session(True) as s:
            rows = s.execute(
                select(data_keys.c.subject_id, data_keys.c.key_version, data_keys.c.wrapped).where(
                    data_keys.c.wrapped.is_not(None)
                )
            ).all()
            for subject_hex, version, wrapped in rows:
                aad = _wrap_aad(UUID(hex=subject_hex), version)
                key = self.kek.unwrap(bytes(wrapped), aad)
                s.execute(
                    update(data_keys)
                    .where(
                        data_keys.c.subject_id == subject_hex, data_keys.c.key_version == version
                    )
                    .values(wrapped=new_kek.wrap(key, aad), kek_id=new_kek.key_id)
                )
                n += 1
        self.kek = new_kek
        return n

    # reads
    def current_version(self, subject: UUID) -> int:
        with self._lock:
            v = self._current.get(subject)
        if v is not None:
            return v
        with self._session(False) as s:
            row = s.execute(_CURRENT_VERSION, {"subject": subject.hex}).first()
        if row is None:
            raise KeyMaterialError(f"no data key for subject {subject}")
        with self._lock:
            self._current.set(subject, int(row[0]))
        return int(row[0])

    def key(self, subject: UUID, version: int) -> AESGCM | None:
        """The data key, or None if the subject was erased."""
        with self._lock:
            cached = self._cache.get((subject, version))
        if cached is None:
            with self._session(False) as s:
                row = s.execute(_WRAPPED, {"subject": subject.hex, "version": version}).first()
            if row is None:
                raise KeyMaterialError(f"no data key v{version} for subject {subject}")
            if row[0] is None:
                cached = self.ERASED
            else:
                cached = AESGCM(self.kek.unwrap(bytes(row[0]), _wrap_aad(subject, version)))
            with self._lock:
                self._cache.set((subject, version), cached)
        return cached if isinstance(cached, AESGCM) else None

    # field encryption
    def seal(self, subject: UUID, context: str, plaintext: str) -> Sealed:
        version = self.current_version(subject)
        key = self.key(subject, version)
        if key is None:
            raise KeyMaterialError(f"subject {subject} was erased; cannot store personal data")
        nonce = os.urandom(NONCE)
        blob = nonce + key.encrypt(nonce, plaintext.encode(), _field_aad(subject, context))
        return Sealed(subject, version, blob)

    def open(self, sealed: Sealed, context: str) -> str | None:
        """Plaintext, or None if the subject was erased."""
        key = self.key(sealed.subject, sealed.key_version)
        if key is None:
            return None
        try:
            raw = key.decrypt(
                sealed.blob[:NONCE], sealed.blob[NONCE:], _field_aad(sealed.subject, context)
            )
        except InvalidTag:
            raise CiphertextRejected(
                f"personal field failed authentication at {context}: tampered or moved"
            ) from None
        return raw.decode()
