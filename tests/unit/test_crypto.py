"""Archive envelope encryption: round trip, tamper detection, rotation, key file hygiene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.archive import crypto
from server.archive.storage import FileSystemStorage, new_key


def test_round_trip_and_fresh_data_key_per_object(tmp_path: Path) -> None:
    ring = crypto.KeyRing.load_or_create(tmp_path / "k" / "master.keys")
    a, b = crypto.seal(ring, b"same"), crypto.seal(ring, b"same")
    assert a != b  # fresh data key and nonce each time
    assert crypto.open_(ring, a) == b"same" == crypto.open_(ring, b)
    assert crypto.header_key_id(a) == ring.active


@pytest.mark.parametrize("offset", [0, 6, 40, -1])
def test_any_altered_byte_is_detected(tmp_path: Path, offset: int) -> None:
    ring = crypto.KeyRing.load_or_create(tmp_path / "master.keys")
    blob = bytearray(crypto.seal(ring, b"x" * 1000))
    blob[offset] ^= 0x01
    with pytest.raises(crypto.IntegrityError):
        crypto.open_(ring, bytes(blob))


def test_truncated_object_is_detected(tmp_path: Path) -> None:
    ring = crypto.KeyRing.load_or_create(tmp_path / "master.keys")
    blob = crypto.seal(ring, b"y" * 100)
    with pytest.raises(crypto.IntegrityError):
        crypto.open_(ring, blob[:-5])


def test_rotation_keeps_old_objects_readable(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    ring = crypto.KeyRing.load_or_create(path)
    old = crypto.seal(ring, b"old")
    first = ring.active
    ring.rotate()
    new = crypto.seal(ring, b"new")
    reloaded = crypto.KeyRing.load_or_create(path)
    assert reloaded.active != first
    assert crypto.open_(reloaded, old) == b"old" and crypto.open_(reloaded, new) == b"new"
    assert crypto.header_key_id(old) == first


def test_key_file_is_private_and_loose_permissions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.keys"
    crypto.KeyRing.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(crypto.KeyError_, match="chmod 600"):
        crypto.KeyRing.load_or_create(path)


def test_storage_keys_are_ours_and_paths_never_come_from_input(tmp_path: Path) -> None:
    store = FileSystemStorage(tmp_path / "archive")
    key = new_key("m")
    store.put(key, b"data")
    assert store.get(key) == b"data"
    for evil in ("../../etc/passwd", "1.2.840.10008.1", "abc.m", key + "/x"):
        with pytest.raises(ValueError):
            store.put(evil, b"x")
    assert list(store.keys()) == [key]


def test_the_key_id_is_read_from_a_header_with_a_long_label(tmp_path: Path) -> None:
    """Start-up's key check and recovery read 300 bytes: an object with a label longer than
    ~190 bytes (a long pool name, escaped non-ASCII) read as "truncated" and was skipped,
    so a wrong key file passed the check (review)."""
    ring = crypto.KeyRing.load_or_create(tmp_path / "k.keys")
    blob = bytes(crypto.seal(ring, b"p" * 100_000, b"x" * 5000))
    with pytest.raises(crypto.IntegrityError):
        crypto.header_key_id(blob[:300])
    assert crypto.header_key_id(blob[: crypto.HEADER_MAX]) == ring.active
