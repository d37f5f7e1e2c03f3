"""What the server logs across index database outages (probe 58).

Found on PostgreSQL by an outside tester: across 3 outages and 2 freezes nothing said the
database was available again; the perfusion scanner logged a ~110-line traceback every 2 s
(also with ``auto_start = false``) and the storage commitment retries one every 10 s; the
store path said "refusing instances (0110)" while the wire status was C0FF, once per worker
process and not again at the next outage. Now each component logs one line per outage and
one "available again" line after it; the scanner with ``auto_start = false`` reads the index
only while it follows an evaluation.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, select

from lucent.net import status
from server import config
from server.context import ServerContext
from server.index.models import Series
from server.index.perfusion_models import PerfusionRun
from server.jobs.queue import JobControl
from server.perfusion.service import PerfusionService, wait_until
from tests.data import bad_inputs, samples
from tests.support.lucent import LucentServer
from tests.support.postgres import PG_BIN, TemporaryPostgres, running_cluster

CT = "1.2.840.10008.5.1.4.1.1.2"
COMPONENTS = ("lucent.store", "lucent.perfusion", "lucent.pacs")
LINE = re.compile(
    r"^\S+ \S+ (?P<level>[A-Z]+) \[(?P<proc>[^]]+)\] (?P<logger>[\w.]+): (?P<msg>.*)$"
)


@pytest.fixture(scope="module")
def pg() -> Iterator[TemporaryPostgres]:
    yield from running_cluster()


def _stop(pg: TemporaryPostgres) -> None:
    done = pg._run([str(PG_BIN / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w", "stop"])
    assert done.returncode == 0, done.stderr


def _start(pg: TemporaryPostgres) -> None:
    done = pg._pg_ctl_start()
    assert done.returncode == 0, done.stderr


def _log_lines(srv: LucentServer) -> list[dict[str, str]]:
    text = srv.log_path.read_text(errors="replace")
    return [m.groupdict() for m in map(LINE.match, text.splitlines()) if m]


def _count(srv: LucentServer, text: str) -> Counter[str]:
    """Lines containing ``text`` per logger of the three components."""
    return Counter(
        line["logger"]
        for line in _log_lines(srv)
        if line["logger"] in COMPONENTS and text in line["msg"]
    )


def _store(srv: LucentServer, tmp: Path, name: str) -> int | None:
    ds = samples.make_instance(CT, patient_id="P58")
    path = samples.write(ds, tmp / f"{name}.dcm")
    return bad_inputs.send_raw_c_store(path, "127.0.0.1", srv.port, called_ae=srv.ae_title)


def _outage(pg: TemporaryPostgres, srv: LucentServer, tmp: Path, n: int) -> None:
    """PostgreSQL away for a few scans and retries; a C-STORE during it and after it."""
    _stop(pg)
    try:
        assert _store(srv, tmp, f"down{n}") == status.PROCESSING_FAILURE  # 0xC0FF on the wire
        srv.wait_until(
            lambda: (
                _count(srv, "index database unavailable") == Counter({c: n for c in COMPONENTS})
            ),
            30,
            f"outage {n}: one 'unavailable' line per component",
        )
        time.sleep(3)  # ~6 more scans and commitment retries, all failing
    finally:
        _start(pg)
    assert _store(srv, tmp, f"back{n}") == status.SUCCESS
    srv.wait_until(
        lambda: (
            _count(srv, "index database available again after")
            == Counter({c: n for c in COMPONENTS})
        ),
        30,
        f"outage {n}: one 'available again' line per component",
    )


@pytest.mark.postgres
def test_each_outage_is_one_line_per_component_and_its_end_is_logged(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    srv = LucentServer(
        tmp_path / "srv",
        workers=1,
        settings={
            "index": {"database_url": pg.create_database("probe58_outage_log")},
            "perfusion": {"scan_seconds": 0.5},
            "pacs": {"commitment_retry_seconds": 2.0},  # a retry pass every 0.5 s
        },
    )
    srv.start()
    try:
        assert _store(srv, tmp_path, "first") == status.SUCCESS
        _outage(pg, srv, tmp_path, 1)
        _outage(pg, srv, tmp_path, 2)  # the next outage is logged again
        time.sleep(1)
        assert _count(srv, "index database unavailable") == Counter({c: 2 for c in COMPONENTS})
        assert _count(srv, "available again") == Counter({c: 2 for c in COMPONENTS})
        text = srv.log_path.read_text(errors="replace")
        # no traceback per scan or retry: 48 of them in 1.5 minutes for the tester
        assert "perfusion scan failed" not in text and "commitment retry failed" not in text
        store = [
            line["msg"]
            for line in _log_lines(srv)
            if line["logger"] == "lucent.store" and "unavailable" in line["msg"]
        ]
        # the log names the status the sender got
        assert all("refusing instances (0xC0FF)" in m for m in store), store
        assert "0110" not in text
    finally:
        srv.stop()


# ------------------------------------------------------- the scanner with auto_start off


@pytest.fixture
def idle_ctx(tmp_path: Path) -> Iterator[ServerContext]:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "perfusion": {"auto_start": False, "scan_seconds": 0.1, "quiet_seconds": 0.0},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    try:
        yield ctx
    finally:
        ctx.close()


def _add(ctx: ServerContext, tmp: Path, study: str, series: str, number: int) -> None:
    ds = samples.make_instance(CT, study_uid=study, series_uid=series, instance_number=number)
    assert ctx.store(samples.write(ds, tmp / f"ct{number}.dcm").read_bytes(), pool="DEFAULT").ok


def test_with_auto_start_off_an_idle_scanner_does_not_query_and_catches_up_for_a_run(
    idle_ctx: ServerContext, tmp_path: Path
) -> None:
    """The scanner queried the index every scan_seconds although, with auto_start off and
    no evaluation under way, nothing it could find starts or aborts anything (probe 58).
    Once a run is submitted it follows the index again, from where it stands now: images
    that arrived while it idled are not "new images" of that run."""
    ctx = idle_ctx
    study, series = str(generate_uid()), str(generate_uid())
    for i in range(4):
        _add(ctx, tmp_path, study, series, i + 1)
    statements = [0]

    def counted(*_: Any) -> None:
        statements[0] += 1

    svc = PerfusionService(ctx)
    entered = threading.Event()

    def analyse(control: JobControl, *_: Any) -> tuple[int | None, list[str]]:
        entered.set()
        control.cancel.wait(30)  # an evaluation under way until it is aborted
        return None, []

    svc._analyse_in_process = analyse  # type: ignore[method-assign]
    try:
        time.sleep(1.0)  # the first scan (runs a stop interrupted would restart) is done
        event.listen(ctx.engine, "before_cursor_execute", counted)
        try:
            time.sleep(1.5)  # 15 scan intervals
        finally:
            event.remove(ctx.engine, "before_cursor_execute", counted)
        assert statements[0] == 0, f"{statements[0]} statement(s) while idle"
        _add(ctx, tmp_path, study, series, 5)  # arrives while nobody follows the index
        with ctx.Session() as db:
            series_pk = db.scalars(select(Series.id).where(Series.series_uid == series)).one()
        run_id = svc._submit(series_pk, svc.examine_series(series_pk), "manual", "")
        assert entered.wait(30)
        time.sleep(1.0)  # ten scans: the run's own five images do not abort it

        def state() -> str:
            with ctx.Session() as db:
                run = db.get(PerfusionRun, run_id)
                assert run is not None
                return run.state

        assert state() == "running"
        _add(ctx, tmp_path, study, series, 6)  # a new image: the scanner follows again
        assert wait_until(lambda: state() == "superseded", 10), state()
    finally:
        svc.close()
