"""Our server with DCMTK dcmqrscp as its remote PACS: the set-up the dcmqrscp tests share.

One place starts both, loads the PACS, registers it as a remote node and tears both down,
so each test states only what differs (node name and timeout, server settings, Nagle on
to make a C-MOVE slow enough to cut). Plain Python with no pytest import, like the peers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import LOOPBACK, DcmQrScp, free_port

__all__ = ["LucentWithQr", "ct_files", "lucent_with_dcmqrscp"]


@dataclass
class LucentWithQr:
    """A running server, its logged-in client, the running dcmqrscp and its node there."""

    server: LucentServer
    api: LucentClient
    qr: DcmQrScp
    node: schemas.RemoteNodeOut


def ct_files(folder: Path, count: int, prefix: str = "i", **attrs: Any) -> list[Path]:
    """``count`` CT instances (InstanceNumber 1..count, ``attrs`` as make_instance takes
    them) written as Part-10 files ``<prefix><n>.dcm`` under ``folder``: what dcmqridx
    loads into the PACS."""
    return [
        samples.write(
            samples.make_instance(CTImageStorage, instance_number=i + 1, **attrs),
            folder / f"{prefix}{i}.dcm",
        )
        for i in range(count)
    ]


@contextmanager
def lucent_with_dcmqrscp(
    workdir: Path,
    files: Iterable[Path] = (),
    *,
    node_name: str = "dcmqrscp",
    node_timeout: int = 5,
    nodelay: bool = True,
    settings: dict[str, dict[str, Any]] | None = None,
) -> Iterator[LucentWithQr]:
    """Start our server (one DICOM worker, pool LUCENT on a free port) and a dcmqrscp that
    knows it as move destination "lucent", load ``files`` into the PACS and add the PACS as
    node ``node_name``; stop both on exit. ``nodelay=False`` leaves Nagle on in dcmqrscp
    (about 45 ms per instance), for tests that need a slow C-MOVE."""
    port = free_port()
    server = LucentServer(
        workdir / "lucent",
        workers=1,
        pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}],
        settings=settings,
    )
    qr = DcmQrScp(
        peers={"lucent": ("LUCENT", LOOPBACK, port)}, workdir=workdir / "qr", nodelay=nodelay
    )
    with server, qr:
        qr.add_files(files)
        api = server.client()
        try:
            node = api.add_node(
                schemas.RemoteNodeIn(
                    name=node_name, ae_title=qr.aet, host=LOOPBACK, port=qr.port,
                    timeout=node_timeout,
                )
            )  # fmt: skip
            yield LucentWithQr(server, api, qr, node)
        finally:
            api.close()
