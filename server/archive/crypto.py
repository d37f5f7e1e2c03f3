"""AES-256-GCM envelope encryption for archive objects (FAQ: "encrypted storage (AES256)").

Every object gets a fresh 256-bit data key; the data key is wrapped (AES-256-GCM) by a master
key whose id is written in the object header, so master keys can be rotated and objects
sealed under an older key stay readable. The header is authenticated as associated data.
Layout (Orthanc object-storage EncryptionHelpers follow the same idea)::

    b"LCA2" | u8 len(key_id) | key_id | u16 len(label) | label | wrap_nonce(12)
            | wrapped_key(32+16) | nonce(12) | ct+tag

The label is authenticated but not encrypted: it carries no patient data, only what is
needed to re-index an object without the database (pool, sender, pixel offset), so the
archive can rebuild its index after a crash or the loss of the database. Objects written in
the older ``LCA1`` layout (no label) stay readable.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"LCA2"
MAGIC_V1 = b"LCA1"
_NONCE = 12
_WRAPPED = 32 + 16
_TAG = 16


class KeyError_(Exception):
    """The key file is missing, unreadable, has loose permissions, or lacks a key id."""


class IntegrityError(Exception):
    """An archive object failed authentication: it was altered or is truncated."""


def check_key_file(path: Path) -> None:
    """KeyError_ unless the key file is private to the server's account: mode 0600 and
    owned by the effective user the server runs as. A 0600 file owned by another account
    was accepted (outside probe 48): that account can read every master key, and so
    decrypt the whole archive. Checked wherever the key ring is loaded (every server
    process at start, rotate-key); check-config can call it on its own."""
    if os.name != "posix":
        return
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyError_(f"key file {path} is unreadable: {exc.strerror or exc}") from exc
    mode = info.st_mode & 0o777
    if mode & 0o077:
        raise KeyError_(
            f"key file {path} has permissions {oct(mode)}; it must be 0600 (chmod 600 {path})"
        )
    me = os.geteuid()
    if info.st_uid != me:
        raise KeyError_(
            f"key file {path} is owned by {_account(info.st_uid)}, not by {_account(me)} that "
            f"the server runs as: that account can read every master key. Make it the "
            f"server's (chown {_account(me)} {path}) and keep it 0600"
        )


def _account(uid: int) -> str:
    """An account's name for a message (its number when it has none)."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


@dataclass
class KeyRing:
    """Master keys by id; ``active`` seals new objects, every key can open old ones."""

    path: Path
    keys: dict[str, bytes]
    active: str

    @classmethod
    def load_or_create(cls, path: Path, *, archive_in_use: bool = False) -> KeyRing:
        """Open the key file, creating it (mode 0600; its folder 0700 when we create that)
        with one key if missing.

        ``archive_in_use``: the archive already holds sealed objects. A new key cannot open
        them, and start-up recovery would count them unreadable: a missing key file is then
        an error to fix by restoring it, never a reason to start afresh."""
        if not path.exists():
            if archive_in_use:
                raise KeyError_(
                    f"the key file {path} is missing, but the archive holds objects sealed "
                    "with its keys: restore the key file from your backup (a new key cannot "
                    "open them). Nothing was changed."
                )
            # a folder we create is 0700; one that exists keeps its mode: key_file =
            # "/etc/lucent.keys" made /etc 0700 (outside probe 29)
            try:
                path.parent.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                pass
            else:
                os.chmod(path.parent, 0o700)  # whatever the umask
            ring = cls(path=path, keys={}, active="")
            ring.rotate()
            return ring
        check_key_file(path)
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


def _envelope(ring: KeyRing, label: bytes) -> tuple[bytes, bytes, bytes]:
    """A fresh data key, and the authenticated header that carries it wrapped, plus the
    object's nonce: what every sealed object starts with."""
    if len(label) > 0xFFFF:
        raise ValueError("archive object label is limited to 65535 bytes")
    key_id = ring.active.encode()
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(_NONCE)
    wrapped = AESGCM(ring.keys[ring.active]).encrypt(wrap_nonce, data_key, key_id)
    header = (
        MAGIC
        + struct.pack("B", len(key_id))
        + key_id
        + struct.pack("<H", len(label))
        + label
        + wrap_nonce
        + wrapped
    )
    return data_key, header, os.urandom(_NONCE)


def seal(ring: KeyRing, plaintext: bytes | memoryview, label: bytes = b"") -> bytearray:
    """Encrypt one object under a fresh data key wrapped by the active master key.

    ``label`` (at most 64 KiB, no patient data) is stored in clear and authenticated.
    The object is built in one buffer: the cipher writes straight after the header, where
    ``header + nonce + AESGCM.encrypt()`` allocated and copied a 0.5 MB CT image twice
    (the copy cost as much as the encryption on this kind of machine).
    """
    data_key, header, nonce = _envelope(ring, label)
    body = len(header) + _NONCE
    size = len(plaintext)
    # update_into wants room for a block less one beyond what it writes: the tag's room
    out = bytearray(body + size + _TAG)
    out[: len(header)] = header
    out[len(header) : body] = nonce
    encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(header)
    with memoryview(out) as view:
        written = encryptor.update_into(plaintext, view[body:])
    encryptor.finalize()  # GCM is a stream mode: everything was written above
    end = body + written
    out[end:] = encryptor.tag
    return out


class Sealer:
    """``seal`` in pieces, for an object whose bytes arrive over time: the Store SCP seals
    and writes the pixel object while the sender's PDUs are still coming in. ``head``,
    then every ``update``, then ``finish`` (the tag) is the same layout ``seal`` makes."""

    def __init__(self, ring: KeyRing, label: bytes = b"") -> None:
        data_key, header, nonce = _envelope(ring, label)
        self.head = header + nonce
        self._encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(header)

    def update(self, plaintext: bytes | memoryview) -> bytes:
        return self._encryptor.update(plaintext)

    def finish(self) -> bytes:
        self._encryptor.finalize()
        return self._encryptor.tag


@dataclass(frozen=True)
class _Header:
    key_id: str
    label: bytes
    wrap_nonce: bytes
    wrapped: bytes
    end: int  # where the header (the associated data) ends


def _header(blob: bytes) -> _Header:
    magic = blob[:4]
    if magic not in (MAGIC, MAGIC_V1):
        raise IntegrityError("not a Lucent archive object")
    try:
        n = blob[4]
        key_id = blob[5 : 5 + n].decode()
        pos = 5 + n
        label = b""
        if magic == MAGIC:
            (size,) = struct.unpack_from("<H", blob, pos)
            label = bytes(blob[pos + 2 : pos + 2 + size])
            pos += 2 + size
        wrap_nonce = blob[pos : pos + _NONCE]
        wrapped = blob[pos + _NONCE : pos + _NONCE + _WRAPPED]
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise IntegrityError("archive object header is damaged") from exc
    end = pos + _NONCE + _WRAPPED
    if len(blob) < end + _NONCE + 16:
        raise IntegrityError("archive object is truncated")
    return _Header(key_id, label, wrap_nonce, wrapped, end)


#: The longest header an object can have (a 255-byte key id, a 64 KiB label): reading this
#: much is enough for ``header_key_id`` (300 bytes was too short for a long label, so the
#: key check read "truncated" and checked nothing; review).
HEADER_MAX = 4 + 1 + 255 + 2 + 0xFFFF + _NONCE + _WRAPPED + _NONCE + 16


def header_key_id(blob: bytes) -> str:
    """The master key id an object was sealed with (for rotation reports)."""
    return _header(blob).key_id


def open_labelled(ring: KeyRing, blob: bytes) -> tuple[bytes, bytes]:
    """Decrypt and authenticate one object; returns (label, plaintext).

    Raises IntegrityError on any tampering, truncation or unknown master key.
    """
    h = _header(blob)
    master = ring.keys.get(h.key_id)
    if master is None:
        raise IntegrityError(f"archive object sealed with unknown master key '{h.key_id}'")
    view = memoryview(blob)  # the body is not copied out before decryption
    header = view[: h.end]
    nonce = bytes(view[h.end : h.end + _NONCE])
    body = view[h.end + _NONCE :]
    try:
        data_key = AESGCM(master).decrypt(h.wrap_nonce, h.wrapped, h.key_id.encode())
        return h.label, AESGCM(data_key).decrypt(nonce, body, header)
    except Exception as exc:  # cryptography raises InvalidTag
        raise IntegrityError("archive object failed authentication") from exc


def open_(ring: KeyRing, blob: bytes) -> bytes:
    """Decrypt and authenticate one object; raises IntegrityError on any tampering."""
    return open_labelled(ring, blob)[1]
