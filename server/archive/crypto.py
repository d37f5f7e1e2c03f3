"""AES-256-GCM envelope encryption for archive objects (FAQ: "encrypted storage (AES256)").

Every object gets a fresh 256-bit data key; the data key is wrapped (AES-256-GCM) by a master
key whose id is written in the object header, so master keys can be rotated and objects
sealed under an older key stay readable. The header is authenticated as associated data.
Layout (Orthanc object-storage EncryptionHelpers follow the same idea)::

    b"LCA1" | u8 len(key_id) | key_id | wrap_nonce(12) | wrapped_key(32+16) | nonce(12) | ct+tag
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"LCA1"
_NONCE = 12
_WRAPPED = 32 + 16


class KeyError_(Exception):
    """The key file is missing, unreadable, has loose permissions, or lacks a key id."""


class IntegrityError(Exception):
    """An archive object failed authentication: it was altered or is truncated."""


@dataclass
class KeyRing:
    """Master keys by id; ``active`` seals new objects, every key can open old ones."""

    path: Path
    keys: dict[str, bytes]
    active: str

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Open the key file, creating it (mode 0600, folder 0700) with one key if missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            ring = cls(path=path, keys={}, active="")
            ring.rotate()
            return ring
        mode = path.stat().st_mode & 0o777
        if os.name == "posix" and mode & 0o077:
            raise KeyError_(
                f"key file {path} has permissions {oct(mode)}; it must be 0600 (chmod 600 {path})"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            keys = {k: base64.b64decode(v) for k, v in data["keys"].items()}
            active = data["active"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"key file {path} is unreadable: {exc}") from exc
        if active not in keys or any(len(k) != 32 for k in keys.values()):
            raise KeyError_(f"key file {path} is malformed (active key missing or not 256-bit)")
        return cls(path=path, keys=keys, active=active)

    def rotate(self) -> str:
        """Add a new master key and make it active; older keys stay to open older objects."""
        key_id = f"k{len(self.keys) + 1}-{secrets.token_hex(4)}"
        self.keys[key_id] = AESGCM.generate_key(bit_length=256)
        self.active = key_id
        self._save()
        return key_id

    def _save(self) -> None:
        body = json.dumps(
            {
                "active": self.active,
                "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
            },
            indent=1,
        ).encode()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def seal(ring: KeyRing, plaintext: bytes | memoryview) -> bytes:
    """Encrypt one object under a fresh data key wrapped by the active master key."""
    key_id = ring.active.encode()
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(_NONCE)
    wrapped = AESGCM(ring.keys[ring.active]).encrypt(wrap_nonce, data_key, key_id)
    header = MAGIC + struct.pack("B", len(key_id)) + key_id + wrap_nonce + wrapped
    nonce = os.urandom(_NONCE)
    return header + nonce + AESGCM(data_key).encrypt(nonce, plaintext, header)


def header_key_id(blob: bytes) -> str:
    """The master key id an object was sealed with (for rotation reports)."""
    if blob[:4] != MAGIC:
        raise IntegrityError("not a Lucent archive object")
    n = blob[4]
    return blob[5 : 5 + n].decode()


def open_(ring: KeyRing, blob: bytes) -> bytes:
    """Decrypt and authenticate one object; raises IntegrityError on any tampering."""
    try:
        key_id = header_key_id(blob)
        n = len(key_id.encode())
        pos = 5 + n
        wrap_nonce = blob[pos : pos + _NONCE]
        wrapped = blob[pos + _NONCE : pos + _NONCE + _WRAPPED]
        header = blob[: pos + _NONCE + _WRAPPED]
        nonce = blob[len(header) : len(header) + _NONCE]
        body = blob[len(header) + _NONCE :]
    except (IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError("archive object header is damaged") from exc
    master = ring.keys.get(key_id)
    if master is None:
        raise IntegrityError(f"archive object sealed with unknown master key '{key_id}'")
    try:
        data_key = AESGCM(master).decrypt(wrap_nonce, wrapped, key_id.encode())
        return AESGCM(data_key).decrypt(nonce, body, header)
    except Exception as exc:  # cryptography raises InvalidTag
        raise IntegrityError("archive object failed authentication") from exc
