"""Reserved archive files (the ingest write path): prepared ahead, filled once, swept after a
crash, removed on a clean close — on a real filesystem."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.archive.storage import BATCH, RESERVED_KINDS, FileSystemStorage, new_key


def _files(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in root.glob("*/*") if p.is_file()}


def test_reserved_pair_is_filled_in_place_and_only_written_objects_are_keys(
    tmp_path: Path,
) -> None:
    store = FileSystemStorage(tmp_path / "archive", spares=4)
    base = store.reserve()
    names = {f"{base}.{kind}" for kind in RESERVED_KINDS}
    assert names <= set(_files(store.root))  # both exist before any data arrives
    assert all(_files(store.root)[n] == 0 for n in names)
    assert list(store.keys()) == []  # empty reserved files are not objects
    store.put_all(
        [(new_key("m", base), b"meta"), (new_key("p", base), lambda: b"pixels")], reserved=True
    )
    assert store.get(f"{base}.m") == b"meta" and store.get(f"{base}.p") == b"pixels"
    assert sorted(store.keys()) == sorted(names)
    assert not list(store.root.glob("*/*.tmp"))  # written in place, no temp file
    # A reserved file is filled once: a second write must not overwrite an object.
    with pytest.raises(FileExistsError):
        store.put_all([(f"{base}.m", b"other")], reserved=True)
    assert store.get(f"{base}.m") == b"meta"
    store.close()


def test_close_removes_unused_reserved_files_and_keeps_objects(tmp_path: Path) -> None:
    store = FileSystemStorage(tmp_path / "archive", spares=8)
    base = store.reserve()
    store.put_all([(f"{base}.m", b"m"), (f"{base}.p", b"p")], reserved=True)
    store.reserve()  # taken but never written: a store that failed after reserving
    store.close()
    left = _files(store.root)
    assert {n for n, size in left.items() if size} == {f"{base}.m", f"{base}.p"}
    assert len([n for n, size in left.items() if not size]) == 2  # only the taken pair


def test_sweep_after_a_crash_counts_temp_and_unused_files(tmp_path: Path) -> None:
    store = FileSystemStorage(tmp_path / "archive", spares=0)
    written, unused = store.reserve(), store.reserve()
    store.put_all([(f"{written}.m", b"m"), (f"{written}.p", b"p")], reserved=True)
    (store.root / written[:2] / f"{new_key('m')}.tmp").write_bytes(b"half")
    # A new process (start-up recovery) finds what the crashed one left.
    half_written, never_written = FileSystemStorage(store.root).sweep_temporary()
    assert (half_written, never_written) == (1, 2)
    assert set(_files(store.root)) == {f"{written}.m", f"{written}.p"}
    assert not (store.root / unused[:2] / f"{unused}.m").exists()


def test_a_reserved_file_swept_meanwhile_is_written_anew(tmp_path: Path) -> None:
    store = FileSystemStorage(tmp_path / "archive", spares=0)
    base = store.reserve()
    FileSystemStorage(store.root).sweep_temporary()  # e.g. rebuild-index in another process
    store.put_all([(f"{base}.m", b"m"), (f"{base}.p", b"p")], reserved=True)
    assert store.get(f"{base}.m") == b"m" and store.get(f"{base}.p") == b"p"


@pytest.mark.parametrize("sync", [True, False])
def test_sync_writes_setting_decides_whether_objects_are_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """``archive.sync_writes``: every object and folder flushed before a store is answered,
    or none (battery-backed caches); the objects are the same either way."""
    store = FileSystemStorage(tmp_path / "archive", spares=0, sync=sync)
    base = store.reserve()
    flushes: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: flushes.append(fd), raising=False)
    monkeypatch.setattr(os, "fsync", lambda fd: flushes.append(fd))
    store.put_all([(f"{base}.m", b"meta"), (f"{base}.p", b"pixels")], reserved=True)
    store.put(new_key("m"), b"no pixels: temp file and rename")
    assert len(flushes) == (4 if sync else 0)  # two reserved, one new object and its folder
    assert store.get(f"{base}.p") == b"pixels"
    assert len(list(store.keys())) == 3
    store.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_prepared_stock_fills_when_idle_and_only_to_low_water_during_a_burst(
    tmp_path: Path,
) -> None:
    """``archive.prepared_objects``: a burst shorter than the stock creates no file while
    the sender waits; during a longer one the stock is only kept above low water, and it is
    topped up again once the burst is over."""
    store = FileSystemStorage(tmp_path / "archive", spares=0)
    target = 4 * BATCH
    store.prepare(target)
    assert _wait_for(lambda: len(_files(store.root)) == 2 * target)  # before any store
    # A burst: reserves every 20 ms, well inside BUSY_SECONDS of each other.
    taken = [store.reserve() for _ in range(target - 4)]
    highest = 0
    for _ in range(40):
        taken.append(store.reserve())
        highest = max(highest, len(store._spares))
        time.sleep(0.02)
    assert highest <= store._low_water + BATCH  # kept above low water, not refilled
    assert len(set(taken)) == len(taken)  # every reserve got its own pair
    assert _wait_for(lambda: len(store._spares) == target)  # idle again: topped up
    store.close()
    assert len(_files(store.root)) == 2 * len(taken)  # unused spares removed on close
