"""Audit forwarding (issue 4, IHE ATNA): the real server sends its trail as RFC 5424 syslog
over mutual TLS (RFC 5425 octet counting) to a real rsyslog with the gnutls driver. rsyslog
parses each message as RFC 5424 and writes its fields; we check those fields and the DICOM
audit XML. The collector is down at first and restarted later: nothing is lost, logins are
never held up by it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from lucent.api.client import ApiError, LucentClient
from server.accounts.certs import make_self_signed
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer
from tests.support.peers import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS = list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))
pytestmark = pytest.mark.skipif(
    not (Path(RSYSLOGD).exists() and GTLS),
    reason="rsyslog with rsyslog-gnutls is not installed (scripts/setup.sh installs it)",
)
SEP = "\x1f"  # field separator in the collector's output template


class Collector:
    """rsyslogd in the foreground: imtcp over gtls, client certificates required."""

    def __init__(self, folder: Path, port: int, server: Path, server_key: Path, ca: Path) -> None:
        self.folder, self.port = folder, port
        self.out = folder / "received.log"
        self.conf = folder / "rsyslog.conf"
        work = folder / "work"
        work.mkdir(parents=True, exist_ok=True)
        fields = SEP.join(
            ["%pri%", "%protocol-version%", "%app-name%", "%procid%", "%msgid%",
             "%structured-data%", "%timereported:::date-rfc3339%", "%hostname%", "%msg%"]
        )  # fmt: skip
        self.conf.write_text(
            f'global(workDirectory="{work}" defaultNetstreamDriver="gtls"\n'
            f'  defaultNetstreamDriverCAFile="{ca}"\n'
            f'  defaultNetstreamDriverCertFile="{server}"\n'
            f'  defaultNetstreamDriverKeyFile="{server_key}")\n'
            'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"\n'
            '  streamDriver.authMode="x509/certvalid")\n'
            f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
            f'template(name="fields" type="string" string="{fields}\\n")\n'
            f'*.* action(type="omfile" file="{self.out}" template="fields")\n'
        )
        check = subprocess.run(
            [RSYSLOGD, "-N1", "-f", str(self.conf)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslog.pid")],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "rsyslog.err").open("ab"),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def messages(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line.split(SEP, 8) for line in lines if line.count(SEP) >= 8]

    def wait_for(self, text: str, timeout: float = 60.0) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if any(text in m[8] for m in found):
                return found
            time.sleep(0.3)
        err = (self.folder / "rsyslog.err").read_text(errors="replace")
        raise AssertionError(f"collector never received {text!r}; rsyslog said:\n{err}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[LucentServer, Collector]]:
    collector_pair = make_self_signed(tmp_path / "collector", ["127.0.0.1"], stem="collector")
    client_pair = make_self_signed(tmp_path / "client", ["lucent-server"], stem="client")
    trusted = tmp_path / "collector-trusts.pem"  # rsyslog's CA file: our client certificate
    trusted.write_bytes(client_pair.cert.read_bytes())
    port = free_port()
    collector = Collector(
        tmp_path / "rsyslog", port, collector_pair.cert, collector_pair.key, trusted
    )
    audit = {
        "syslog_host": "127.0.0.1",
        "syslog_port": port,
        "syslog_ca_file": str(collector_pair.cert),
        "syslog_cert": str(client_pair.cert),
        "syslog_key": str(client_pair.key),
        "syslog_retry_max_seconds": 1.0,
    }
    server = LucentServer(tmp_path / "server", workers=1, settings={"audit": audit})
    try:
        yield server.start(), collector
    finally:
        server.stop()
        collector.stop()


def _fail_login(server: LucentServer, name: str) -> None:
    with pytest.raises(ApiError) as refused, LucentClient(server.api_url) as api:
        api.login(name, "wrong-password")
    assert refused.value.status == 401


def _audit_xml(msg: str) -> ET.Element:
    text = msg.lstrip("\ufeff")
    assert text.startswith("<AuditMessage"), msg[:80]
    return ET.fromstring(text)


def test_trail_reaches_rsyslog_over_tls_even_after_the_collector_was_down(
    setup: tuple[LucentServer, Collector],
) -> None:
    server, collector = setup
    # collector down: logins and their audit records go on as usual
    _fail_login(server, "mallory")
    with LucentClient(server.api_url) as admin:
        admin.login(ADMIN_USER, ADMIN_PASSWORD)
        local = admin.audit(limit=5000)
        assert any(r.user == "mallory" and r.outcome == 4 for r in local)

        collector.start()
        received = collector.wait_for('UserID="mallory"')
        for pri, version, app, procid, msgid, sd, stamp, host, msg in received:
            # rsyslog's RFC 5424 parser filled every header field from our message
            assert version == "1" and app == "lucent" and msgid == "DICOM+RFC3881"
            assert pri in ("84", "85")  # authpriv.warning / authpriv.notice
            # the record's id, so the repository can drop at-least-once repeats (probe 34)
            assert sd.startswith('[audit@32473 recordId="') and procid.isdigit()
            assert host not in ("", "-")
            assert stamp[:4].isdigit() and "T" in stamp
            _audit_xml(msg)
        [failed] = [
            _audit_xml(m[8]) for m in received if 'UserID="mallory"' in m[8] and m[0] == "84"
        ]
        ident = failed.find("EventIdentification")
        assert ident is not None and ident.get("EventOutcomeIndicator") == "4"
        event = ident.find("EventID")
        assert event is not None and event.get("csd-code") == "110114"
        # everything stored before the collector came up was forwarded (at least once)
        assert len(collector.messages()) >= len(local)

        # collector restarts: the sender reconnects and sends what happened meanwhile
        collector.stop()
        _fail_login(server, "trudy")
        assert any(r.user == "trudy" for r in admin.audit(user="trudy"))
        collector.start()
        collector.wait_for('UserID="trudy"')
