"""Series thumbnails for the study browser: the middle image, rendered by the server.

Issue 5 (browser "with thumbnails"): the server renders the middle instance with its default
window (WADO-RS /rendered, rights-checked and audited like any view), the workstation
scales it down. Fetched once per series and kept in a small LRU cache, so collapsing and
re-expanding a study or refreshing the list costs no further requests. No Qt here: the
browser runs ``fetch`` in a worker thread and turns the PNG into an icon.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from lucent.api import schemas
from workstation.model.series import viewable


def middle_instance(instances: list[schemas.InstanceOut]) -> schemas.InstanceOut | None:
    """The image instance in the middle of the series by Instance Number (PACS convention)."""
    images = [i for i in instances if viewable(i.sop_class_uid) == "image" and i.rows]
    if not images:
        return None
    images.sort(key=lambda i: (i.instance_number or 0, i.sop_instance_uid))
    return images[len(images) // 2]


class ThumbnailCache:
    """PNG bytes per series UID, least recently used dropped beyond ``capacity``.

    ``None`` is cached too (a series without images), so it is not asked again.
    """

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, bytes | None] = OrderedDict()
        self._lock = threading.Lock()
        self.fetches = 0  # server round trips, for tests and the status bar

    def get(self, series_uid: str) -> tuple[bool, bytes | None]:
        with self._lock:
            if series_uid not in self._items:
                return False, None
            self._items.move_to_end(series_uid)
            return True, self._items[series_uid]

    def put(self, series_uid: str, png: bytes | None) -> None:
        with self._lock:
            self._items[series_uid] = png
            self._items.move_to_end(series_uid)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def fetch(self, client: Any, series: schemas.SeriesOut) -> bytes | None:
        """Cached PNG of the series' middle image; one instance list + one render if not."""
        hit, png = self.get(series.series_uid)
        if hit:
            return png
        self.fetches += 1
        inst = middle_instance(client.instances(series.series_uid))
        png = None
        if inst is not None:
            png = client.rendered(series.study_uid, series.series_uid, inst.sop_instance_uid)
        self.put(series.series_uid, png)
        return png
