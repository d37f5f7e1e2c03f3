"""Query/retrieve/send benchmark (issue 3): our SCU against DCMTK, Orthanc as the PACS.

Same run, one table, every sender's files read into memory just before its run
(``warm_page_cache``: this machine evicts cold page cache), Nagle off everywhere
(TCP_NODELAY=1 for DCMTK and Orthanc, our sockets through lucent.net.transport):

- C-FIND at STUDY level against Orthanc holding 1000 studies, latency median and p95:
  ours (lucent.net.scu.find in-process, and through the server API) vs DCMTK ``findscu``
  asking for the same return keys (``scu.STUDY_KEYS``); one query by Patient ID (one match)
  and one listing all studies. A second findscu row asks for the 9 keys this benchmark
  used to give findscu alone. They leave out Requesting Service (0032,1033), which Orthanc
  1.10 does not keep in its index: to answer it, Orthanc opens every matching study's file
  (measured: the 1001-study listing 85 -> 210 ms for us, 147 -> 270 ms for findscu with
  and without that one key). Only the same-keys row measures the SCU.
- C-MOVE of a 500-instance CT series from Orthanc: into our pool (retrieve job through the
  API, encryption and indexing on) vs DCMTK ``movescu`` into DCMTK ``storescp`` (plain files,
  never fsynced), and into a second server of ours with ``archive.sync_writes`` off, like for
  like with storescp.
- C-STORE of the same 500 instances to Orthanc: ours (send job through the API, reading and
  decrypting from our archive; ``[pacs] store_associations`` as configured, default 2) vs
  DCMTK ``storescu`` from plain files (one association), alternated ``--store-repeat`` times,
  median of each (this machine is shared: single runs swing by 30 %).

Usage: ``.venv/bin/python bench/qr.py [--count 500] [--studies 1000] [--repeat 30]
[--store-repeat 3]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pydicom.uid import CTImageStorage  # noqa: E402

from lucent.api import schemas  # noqa: E402
from lucent.net import scu  # noqa: E402
from tests.data import samples  # noqa: E402
from tests.support.disk import flush_floor  # noqa: E402
from tests.support.lucent import LucentServer  # noqa: E402
from tests.support.peers import (  # noqa: E402
    Orthanc,
    StoreScp,
    dcmtk_tool,
    dicom_env,
    free_port,
    run_storescu,
    warm_page_cache,
)

#: What ``scu.find`` asks for at STUDY level; findscu gets the same identifier.
RETURN_KEYS = list(scu.LEVEL_KEYS["STUDY"])
#: The keys this benchmark gave findscu before: no Patient ID/Sex, Study ID, the two counts
#: or Requesting Service (the one Orthanc reads from each study's file).
SHORT_KEYS = ["PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "StudyDescription",
              "ModalitiesInStudy", "ReferringPhysicianName", "AccessionNumber",
              "StudyInstanceUID"]  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def findscu(
    orthanc: Orthanc, keys: dict[str, str], return_keys: list[str] = RETURN_KEYS
) -> Callable[[], object]:
    cmd = [dcmtk_tool("findscu"), "-S", "-aet", "FINDSCU", "-aec", orthanc.aet,
           "-k", "QueryRetrieveLevel=STUDY"]  # fmt: skip
    for k in return_keys:
        cmd += ["-k", f"{k}={keys[k]}" if k in keys else k]
    for k, v in keys.items():
        if k not in return_keys:
            cmd += ["-k", f"{k}={v}"]
    cmd += [orthanc.host, str(orthanc.port)]
    env = dicom_env()

    def run() -> object:
        done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace")[-500:])
        return done

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="instances in the CT series")
    parser.add_argument("--studies", type=int, default=1000, help="studies held by Orthanc")
    parser.add_argument("--repeat", type=int, default=30, help="C-FIND repetitions")
    parser.add_argument("--store-repeat", type=int, default=3, help="C-STORE rounds (each side)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lucent-bench-qr-"))
    print(f"writing {args.studies} small studies and a {args.count}-instance CT series ...")
    small_dir = work / "small"
    small_dir.mkdir()
    for i in range(args.studies):
        ds = samples.make_instance(
            CTImageStorage, patient_id=f"BENCH-{i:05d}", patient_name=f"Bench^Patient{i:05d}",
            rows=16, cols=16,
        )  # fmt: skip
        samples.write(ds, small_dir / f"s{i:05d}.dcm")
    ct_files = samples.write_ct_series(work / "ct", args.count)
    from pydicom import dcmread

    first = dcmread(ct_files[0], stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)

    def lucent(folder: str, ae_title: str, sync_writes: bool) -> tuple[LucentServer, int]:
        port = free_port()
        settings = {
            "server": {"log_level": "WARNING"},
            "pacs": {"store_retries": 0},
            "archive": {"sync_writes": sync_writes},
        }
        pools = [{"name": "DEFAULT", "ae_title": ae_title, "port": port}]
        return LucentServer(
            work / folder, workers=0, max_pdu=131072, pools=pools, settings=settings
        ), port

    server, our_port = lucent("lucent", "LUCENT", True)
    # The same server without archive flushes (archive.sync_writes off): storescp, the
    # DCMTK side of the C-MOVE row, never fsyncs; the difference is what durability costs.
    unsynced, unsynced_port = lucent("lucent-unsynced", "LUCENTNS", False)
    rows: list[tuple[str, str, str, str]] = []
    with StoreScp(aet="STORESCP") as storescp:
        modalities = {
            "lucent": ["LUCENT", "127.0.0.1", our_port],
            "lucentns": ["LUCENTNS", "127.0.0.1", unsynced_port],
            "storescp": ["STORESCP", "127.0.0.1", storescp.port],
            "movescu": ["MOVESCU", "127.0.0.1", free_port()],  # Orthanc wants a known caller
            "findscu": ["FINDSCU", "127.0.0.1", free_port()],
        }
        with Orthanc(modalities=modalities, workdir=work / "orthanc") as orthanc, server:
            print("loading Orthanc ...")
            for batch in (small_dir, work / "ct"):
                res = run_storescu(batch, orthanc.host, orthanc.port, orthanc.aet, associations=2)
                assert res.ok, res.output[-2000:]
            api = server.client()
            node = api.add_node(
                schemas.RemoteNodeIn(
                    name="orthanc", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.port
                )
            )
            peer = scu.Peer(orthanc.aet, "127.0.0.1", orthanc.port, calling_ae="LUCENT")

            # ---------------------------------------------------------------- C-FIND
            for label, keys in (
                ("C-FIND STUDY, 1 match (PatientID)", {"PatientID": "BENCH-00042"}),
                (f"C-FIND STUDY, all {args.studies + 1} studies", {}),
            ):
                expect = 1 if keys else args.studies + 1

                def ours(keys: dict[str, str] = keys, expect: int = expect) -> object:
                    r = scu.find(peer, "STUDY", keys, limit=1024 * 8)
                    assert len(r.rows) == expect, (len(r.rows), r.message)
                    return r

                def via_api(keys: dict[str, str] = keys) -> object:
                    return api.pacs_query([node.id], "STUDY", limit=1024, **keys)

                t_ours = timed(ours, args.repeat)
                t_api = timed(via_api, args.repeat)
                t_dcmtk = timed(findscu(orthanc, keys), args.repeat)
                t_short = timed(findscu(orthanc, keys, SHORT_KEYS), args.repeat)
                for who, t in (("ours (SCU)", t_ours), ("ours (API)", t_api),
                               ("DCMTK findscu (same keys)", t_dcmtk),
                               ("DCMTK findscu (old 9 keys)", t_short)):  # fmt: skip
                    rows.append((label, who, f"{statistics.median(t):.1f} / "
                                 f"{percentile(t, 95):.1f} ms", ""))  # fmt: skip
                ratio = statistics.median(t_ours) / statistics.median(t_dcmtk)
                rows[-4] = (*rows[-4][:3], f"{ratio:.2f}x")

            # ---------------------------------------------------------------- C-MOVE
            storescp.clear()
            cmd = [dcmtk_tool("movescu"), "-S", "-aet", "MOVESCU", "-aec", orthanc.aet,
                   "-aem", "STORESCP", "-k", "QueryRetrieveLevel=SERIES",
                   "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={series_uid}",
                   orthanc.host, str(orthanc.port)]  # fmt: skip
            orthanc_storage = orthanc.workdir / "storage"
            warm_page_cache([orthanc_storage])  # Orthanc reads from memory in every row
            t = time.perf_counter()
            done = subprocess.run(cmd, env=dicom_env(), capture_output=True, check=False)
            t_movescu = time.perf_counter() - t
            assert len(storescp.files()) == args.count, (len(storescp.files()), done.stderr[-800:])
            warm_page_cache([orthanc_storage])
            t = time.perf_counter()
            job = api.wait_job(api.retrieve(node.id, study_uid, series_uid=series_uid).id,
                               timeout=600, poll=0.02)  # fmt: skip
            t_move = time.perf_counter() - t
            assert job.state == "done" and job.completed == args.count, job
            label = f"C-MOVE {args.count} instances"
            rows.append((label, "ours (job -> our pool)", f"{t_move:.2f} s",
                         f"{t_move / t_movescu:.2f}x"))  # fmt: skip
            with unsynced:
                api_ns = unsynced.client()
                node_ns = api_ns.add_node(
                    schemas.RemoteNodeIn(
                        name="orthanc", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.port
                    )
                )
                warm_page_cache([orthanc_storage])
                t = time.perf_counter()
                job = api_ns.wait_job(
                    api_ns.retrieve(node_ns.id, study_uid, series_uid=series_uid).id,
                    timeout=600,
                    poll=0.02,
                )
                t_move_ns = time.perf_counter() - t
                assert job.state == "done" and job.completed == args.count, job
                api_ns.close()
            rows.append((label, "ours, sync_writes off", f"{t_move_ns:.2f} s",
                         f"{t_move_ns / t_movescu:.2f}x"))  # fmt: skip
            rows.append((label, "DCMTK movescu -> storescp", f"{t_movescu:.2f} s", ""))

            # ---------------------------------------------------------------- C-STORE
            label = f"C-STORE {args.count} instances"
            t_storescu_all: list[float] = []
            t_send_all: list[float] = []
            for _ in range(max(1, args.store_repeat)):
                orthanc.delete_all()
                warm_page_cache([work / "ct"])
                res = run_storescu(work / "ct", orthanc.host, orthanc.port, orthanc.aet)
                assert res.ok, res.output[-2000:]
                t_storescu_all.append(res.wall_s)
                orthanc.delete_all()
                warm_page_cache([work / "lucent"])  # our archive (and index), as above
                t = time.perf_counter()
                job = api.wait_job(api.send(node.id, series_uid=series_uid, commit=False).id,
                                   timeout=600, poll=0.02)  # fmt: skip
                t_send_all.append(time.perf_counter() - t)
                assert job.state == "done" and job.completed == args.count, job
                assert orthanc.count_instances() == args.count
            t_send, t_storescu = statistics.median(t_send_all), statistics.median(t_storescu_all)
            spread = "  (runs: " + ", ".join(f"{x:.2f}" for x in t_send_all) + ")"
            rows.append((label, "ours (job from archive)", f"{t_send:.2f} s{spread}",
                         f"{t_send / t_storescu:.2f}x"))  # fmt: skip
            spread = "  (runs: " + ", ".join(f"{x:.2f}" for x in t_storescu_all) + ")"
            rows.append((label, "DCMTK storescu (files)", f"{t_storescu:.2f} s{spread}", ""))
            api.close()

    print()
    print("Lucent Q/R benchmark against Orthanc 1.10 on loopback, Nagle off (TCP_NODELAY=1)")
    floor = flush_floor(Path(tempfile.gettempdir()))
    print(
        f"disk flush (4 KB write + fdatasync, median of 40): {floor * 1e3:.2f} ms: Orthanc "
        "sends a C-MOVE's instances one at a time on one association, so our durable "
        f"receive of {args.count} cannot take less than {args.count * floor:.2f} s here"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("operation", "client", "median / p95, or wall", "ours/DCMTK")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
