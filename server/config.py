"""Typed server settings read from one commented TOML file.

The sample in ``resources/lucent-server.sample.toml`` is the documentation: it is copied as
the config on first start, and a test checks that every field here appears in it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import platformdirs
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from lucent.dicom import uids
from lucent.net import upper_layer
from lucent.perfusion.config import PerfusionConfig

SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "resources" / "lucent-server.sample.toml"
#: A base URL for links in mails: scheme, host, optional port and path; no query/fragment.
_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[^\s?#]*)?$")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII, no backslash
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.?$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")  # PS3.5 9.1
#: PS3.7 D.3.3.2: Implementation Version Name, 1-16 characters of the default repertoire
#: (printable ASCII; no backslash, the value delimiter), not only spaces.
_VERSION_NAME = _AE_TITLE
#: Longest uid_root (without its trailing dot): the 64-character UID keeps >= 23 random
#: digits (~76 bits) after it, so UIDs made by independent processes do not collide.
UID_ROOT_MAX = 40
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


class ConfigError(ValueError):
    """A setting that cannot be used, with the key and the reason."""


@dataclass(frozen=True)
class ServerSection:
    data_dir: str = ""
    uid_root: str = "1.2.826.0.1.3680043.10.1455."
    log_level: str = "INFO"


@dataclass(frozen=True)
class IndexSection:
    database_url: str = ""


@dataclass(frozen=True)
class ArchiveSection:
    path: str = ""
    key_file: str = ""
    min_free_mb: int = 1024
    duplicate_policy: str = "replace"
    uid_conflict: str = "file"
    max_inflated_mb: int = 1024
    sync_writes: bool = True
    prepared_objects: int = 256


@dataclass(frozen=True)
class DimseSection:
    bind_address: str = "0.0.0.0"
    max_pdu: int = 16384
    workers: int = 0
    network_timeout: float = 60.0
    dimse_timeout: float = 30.0
    acse_timeout: float = 30.0
    restrict_query_retrieve: bool = True
    query_scope: str = "pool"
    max_find_results: int = 10000
    fast_store: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca_file: str = ""
    tls_require_client_cert: bool = True
    implementation_class_uid: str = upper_layer.IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = upper_layer.IMPLEMENTATION_VERSION


@dataclass(frozen=True)
class PoolSection:
    name: str = "DEFAULT"
    ae_title: str = "LUCENT"
    port: int = 11112
    tls_port: int = 0
    retention_days: int = 0


@dataclass(frozen=True)
class ApiSection:
    bind_address: str = "127.0.0.1"
    port: int = 8750
    tls_cert: str = ""
    tls_key: str = ""
    session_minutes: int = 720
    basic_auth_cache_seconds: int = 300


@dataclass(frozen=True)
class PacsSection:
    """PACS connectivity as SCU (Conformance 4.2.1, 4.2.2, 4.2.4, 4.2.5)."""

    calling_ae_title: str = ""
    max_results: int = 1024
    job_threads: int = 2
    move_retries: int = 3
    retry_backoff_seconds: float = 2.0
    store_retries: int = 2
    instances_per_association: int = 1000
    store_associations: int = 2
    commitment_wait_seconds: float = 10.0
    commitment_retry_seconds: float = 600.0
    commitment_max_attempts: int = 3
    tls_ca_file: str = ""


@dataclass(frozen=True)
class AccountsSection:
    """Login, sessions, devices, PINs and share links (issue 4; FAQ login/PIN/devices)."""

    idle_minutes: float = 30.0
    max_failures: int = 5
    address_max_failures: int = 20
    lockout_seconds: float = 30.0
    lockout_max_seconds: float = 3600.0
    device_approval: str = "automatic"
    pin_login: bool = False
    pin_minutes: float = 10.0
    pin_attempts: int = 3
    reset_minutes: float = 30.0
    reset_mail_seconds: float = 120.0
    reset_address_per_hour: int = 10
    share_max_days: float = 30.0
    share_pin_attempts: int = 5
    public_url: str = ""
    retention_interval_minutes: float = 60.0


@dataclass(frozen=True)
class SmtpSection:
    """Outgoing mail for login PINs and password resets."""

    host: str = ""
    port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "lucent@localhost"


@dataclass(frozen=True)
class AuditSection:
    """Audit trail (PS3.15 A.5); optional forwarding as RFC 5424 syslog over TLS (RFC 5425)
    to an audit record repository (IHE ATNA)."""

    source_id: str = "LUCENT"
    data_access: bool = True
    syslog_host: str = ""
    syslog_port: int = 6514
    syslog_ca_file: str = ""
    syslog_cert: str = ""
    syslog_key: str = ""
    syslog_retry_max_seconds: float = 30.0


@dataclass(frozen=True)
class PerfusionSection:
    """Automatic stroke perfusion evaluation (issue 6, "Server integration")."""

    auto_start: bool = True
    quiet_seconds: float = 60.0
    scan_seconds: float = 2.0
    min_confidence: float = 0.5
    max_concurrent: int = 1
    lookback_minutes: float = 60.0
    work_dir: str = ""
    send_to_node: str = ""
    method: str = "osvd"
    threshold_core: float = 0.3
    threshold_tmax: float = 6.0
    min_island_ml: float = 0.5
    keep_work_files: bool = False


@dataclass(frozen=True)
class Settings:
    """All server settings; paths are resolved by the properties below."""

    server: ServerSection = field(default_factory=ServerSection)
    index: IndexSection = field(default_factory=IndexSection)
    archive: ArchiveSection = field(default_factory=ArchiveSection)
    dimse: DimseSection = field(default_factory=DimseSection)
    pools: tuple[PoolSection, ...] = (PoolSection(),)
    api: ApiSection = field(default_factory=ApiSection)
    pacs: PacsSection = field(default_factory=PacsSection)
    accounts: AccountsSection = field(default_factory=AccountsSection)
    smtp: SmtpSection = field(default_factory=SmtpSection)
    audit: AuditSection = field(default_factory=AuditSection)
    perfusion: PerfusionSection = field(default_factory=PerfusionSection)
    source: Path | None = None

    @property
    def data_dir(self) -> Path:
        if self.server.data_dir:
            return Path(self.server.data_dir).expanduser()
        return Path(platformdirs.user_data_dir("lucent", appauthor=False))

    @property
    def archive_dir(self) -> Path:
        return (
            Path(self.archive.path).expanduser() if self.archive.path else self.data_dir / "archive"
        )

    @property
    def calling_ae_title(self) -> str:
        """The AE title we call remote nodes with ([pacs] calling_ae_title, else the first
        pool's): API jobs and the Q/R SCP's C-MOVE sub-associations alike."""
        return self.pacs.calling_ae_title or self.pools[0].ae_title

    @property
    def key_file(self) -> Path:
        if self.archive.key_file:
            return Path(self.archive.key_file).expanduser()
        return self.data_dir / "keys" / "master.keys"

    @property
    def database_url(self) -> str:
        return self.index.database_url or f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def worker_count(self) -> int:
        return self.dimse.workers if self.dimse.workers > 0 else max(1, os.cpu_count() or 1)

    def pool(self, name: str) -> PoolSection:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


_SECTIONS: dict[str, type] = {
    "server": ServerSection,
    "index": IndexSection,
    "archive": ArchiveSection,
    "dimse": DimseSection,
    "api": ApiSection,
    "pacs": PacsSection,
    "accounts": AccountsSection,
    "smtp": SmtpSection,
    "audit": AuditSection,
    "perfusion": PerfusionSection,
}


class Bound(NamedTuple):
    """The allowed values of one numeric setting: ``low..high``, or above ``low`` when
    ``above`` (a float that must not be 0). ``note`` says what a special value means."""

    low: float
    high: float
    above: bool = False
    note: str = ""

    def text(self) -> str:
        """How the sample config and the error message state the range."""
        low, high = _number(self.low), _number(self.high)
        return f"above {low}, at most {high}" if self.above else f"{low}..{high}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Every numeric setting's range, one place (outside probe 29: lockout_seconds = -1 switched
#: login back-off off, nan made failed logins answer 500, an infinite retention interval
#: killed its thread, scan_seconds = nan spun the main process). The sample config states
#: each range where it documents the key; a test checks both agree. Ports are checked by
#: ``_port`` (0 = off for some), the perfusion thresholds by the engine's own config.
RANGES: dict[str, Bound] = {
    "archive.min_free_mb": Bound(0, 1_073_741_824),  # 1 PiB: more than the disk refuses all
    "archive.max_inflated_mb": Bound(1, 16_384),
    "archive.prepared_objects": Bound(0, 100_000, note="0 = make them as instances arrive"),
    "dimse.max_pdu": Bound(4096, 131_072, note="Conformance 4.2.3.3"),
    "dimse.workers": Bound(0, 256, note="0 = one per CPU core"),
    # 0 made every socket non-blocking: each association failed (outside probe)
    "dimse.network_timeout": Bound(0, 86_400, above=True),
    "dimse.dimse_timeout": Bound(0, 86_400, above=True),
    "dimse.acse_timeout": Bound(0, 86_400, above=True),
    "dimse.max_find_results": Bound(0, 10_000_000, note="0 = no limit"),
    "pools.retention_days": Bound(0, 36_500, note="0 = keep forever"),
    "api.session_minutes": Bound(1, 525_600),
    "api.basic_auth_cache_seconds": Bound(0, 86_400, note="0 = no cache"),
    "pacs.max_results": Bound(1, 1_000_000),
    "pacs.job_threads": Bound(1, 64),
    "pacs.move_retries": Bound(0, 100, note="0 = no retry"),
    "pacs.retry_backoff_seconds": Bound(0, 60, above=True),
    "pacs.store_retries": Bound(0, 100, note="0 = no retry"),
    "pacs.instances_per_association": Bound(1, 1_000_000),
    "pacs.store_associations": Bound(1, 16),
    "pacs.commitment_wait_seconds": Bound(0, 3600, above=True),
    "pacs.commitment_retry_seconds": Bound(0, 604_800, above=True),
    "pacs.commitment_max_attempts": Bound(1, 100),
    "accounts.idle_minutes": Bound(0, 10_080, above=True),
    "accounts.max_failures": Bound(1, 1_000_000),
    "accounts.address_max_failures": Bound(1, 1_000_000),
    "accounts.lockout_seconds": Bound(0, 86_400, above=True),
    "accounts.lockout_max_seconds": Bound(0, 2_592_000, above=True),
    "accounts.pin_minutes": Bound(0, 1440, above=True),
    "accounts.pin_attempts": Bound(1, 100),
    "accounts.reset_minutes": Bound(0, 10_080, above=True),
    "accounts.reset_mail_seconds": Bound(0, 86_400),
    "accounts.reset_address_per_hour": Bound(1, 100_000),
    "accounts.share_max_days": Bound(0, 3650, above=True),
    "accounts.share_pin_attempts": Bound(1, 100),
    "accounts.retention_interval_minutes": Bound(
        0, 10_080, note="0 = only when started through the API"
    ),
    "audit.syslog_retry_max_seconds": Bound(0, 3600, above=True),
    "perfusion.quiet_seconds": Bound(0, 86_400),
    "perfusion.scan_seconds": Bound(0, 3600, above=True),
    "perfusion.min_confidence": Bound(0, 1),
    "perfusion.max_concurrent": Bound(1, 32),
    "perfusion.lookback_minutes": Bound(0, 10_080),
}
#: Numeric settings checked elsewhere: TCP ports (``_port``) and the perfusion engine's
#: thresholds (``PerfusionConfig.from_dict``).
CHECKED_ELSEWHERE = frozenset(
    {
        "pools.port",
        "pools.tls_port",
        "api.port",
        "smtp.port",
        "audit.syslog_port",
        "perfusion.threshold_core",
        "perfusion.threshold_tmax",
        "perfusion.min_island_ml",
    }
)


def _check_range(section: str, key: str, value: float, where: str) -> None:
    bound = RANGES[f"{section}.{key}"]
    ok = math.isfinite(value) and bound.low <= value <= bound.high
    if bound.above and value == bound.low:
        ok = False
    if not ok:
        note = f" ({bound.note})" if bound.note else ""
        raise ConfigError(f"{where} {key} must be {bound.text()}{note}, got {value!r}")


def _check_ranges(s: Settings) -> None:
    for name in _SECTIONS:
        section = getattr(s, name)
        for f in dataclasses.fields(section):
            if f"{name}.{f.name}" in RANGES:
                _check_range(name, f.name, getattr(section, f.name), f"[{name}]")
    for p in s.pools:
        for f in dataclasses.fields(p):
            if f"pools.{f.name}" in RANGES:
                _check_range("pools", f.name, getattr(p, f.name), f"[[pools]] '{p.name}':")
    if s.accounts.lockout_max_seconds < s.accounts.lockout_seconds:
        raise ConfigError(
            "[accounts] lockout_max_seconds must be >= lockout_seconds (the first lockout "
            f"cannot be longer than the longest), got {s.accounts.lockout_max_seconds!r} < "
            f"{s.accounts.lockout_seconds!r}"
        )


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"[{where}] unknown setting '{key}'")
        # the annotation, not type(default): a float setting written as 60 in the defaults
        # refused "network_timeout = 2.5" as "must be int, got float" (probe 16)
        annotation = known[key].type
        expected = (
            _TYPES.get(annotation, type(known[key].default))
            if isinstance(annotation, str)
            else annotation
        )
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"[{where}] {key} must be {expected.__name__}, got {type(value).__name__}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def parse(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Build and validate settings from a parsed TOML document."""
    kwargs: dict[str, Any] = {"source": source}
    for key, value in data.items():
        if key == "pools":
            if not isinstance(value, list) or not value:
                raise ConfigError("[[pools]] must list at least one data pool")
            kwargs["pools"] = tuple(_build(PoolSection, p, "pools") for p in value)
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            kwargs[key] = _build(_SECTIONS[key], value, key)
        else:
            raise ConfigError(f"unknown section [{key}]")
    settings = Settings(**kwargs)
    validate(settings)
    # one place normalises the organisation root: every UID maker gets "<root>." (a root
    # without its dot passed here and then failed every storage commitment job, probe 16)
    root = uids.normalise_root(settings.server.uid_root)
    if root != settings.server.uid_root:
        server = dataclasses.replace(settings.server, uid_root=root)
        settings = dataclasses.replace(settings, server=server)
    return settings


def _port(value: int, key: str, *, zero_off: bool = False) -> None:
    """TCP ports are 1..65535 (70000 listened on 70000-65536; 0 on a random port)."""
    if zero_off and value == 0:
        return
    if not 1 <= value <= 65535:
        off = " (0 = off)" if zero_off else ""
        raise ConfigError(f"{key} must be a TCP port between 1 and 65535{off}, got {value}")


def check_listening(s: Settings) -> None:
    """What a server that listens needs beyond valid values (``run`` and ``check-config``):
    a fixed port for the API and every pool. Port 0 listened on a random port while the
    banner said 0 (probe 16); in-process uses (tests, tools) that open no listener keep it."""
    _port(s.api.port, "[api] port")
    for p in s.pools:
        _port(p.port, f"[[pools]] '{p.name}': port")


def _check_ae_title(value: str, key: str) -> None:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ConfigError(
            f"{key} must be 1-16 printable ASCII characters, no backslash, not only spaces "
            f"(got {value!r})"
        )


def _check_distinct_ae_title(pool: PoolSection, titles: dict[str, PoolSection]) -> None:
    """A pool's AE title is its network identity (Conformance 4.1.1.2): two pools with one
    title made the second unreachable by title, and "LUCENT " equals "LUCENT" on the wire
    (PS3.8 9.3.2: leading and trailing spaces are not significant). AE titles are
    case-sensitive, but many modalities and PACS upper-case what is typed in, so titles
    differing only by case are refused too: a study would land in the other pool."""
    key = pool.ae_title.strip()
    other = titles.get(key.upper())
    if other is not None:
        if other.ae_title.strip() == key:
            raise ConfigError(
                f"[[pools]] '{pool.name}' and '{other.name}' have the same ae_title "
                f"{key!r} (leading and trailing spaces do not count): give each pool its own"
            )
        raise ConfigError(
            f"[[pools]] '{pool.name}' ae_title {pool.ae_title!r} differs from '{other.name}''s "
            f"{other.ae_title!r} only by case: many modalities and PACS upper-case AE titles, "
            "so a study sent to one pool would land in the other; give each pool a title "
            "that differs in more than case"
        )
    titles[key.upper()] = pool


def _url_has_host(url: str) -> bool:
    """ "http://:" passed the pattern: a URL needs a host, and a port that is a number."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return False
    return bool(parts.hostname)


def _check_paths(s: Settings) -> None:
    """The key file must not live in the archive folder: run refused that only after the
    migrations had created the index, while check-config said OK (probe 16). Plaintext
    patient data (the perfusion scratch folder, a SQLite index) must not either: the
    archive folder is the encrypted one, copied and backed up as such (outside probe 29)."""
    archive = s.archive_dir.expanduser().resolve()
    key = s.key_file.expanduser().resolve()
    if archive == key or archive in key.parents:
        raise ConfigError(
            f"[archive] key_file {key} must not live inside the archive folder {archive}: "
            "whoever copies the archive would get its keys too"
        )
    plain: list[tuple[str, Path]] = []
    if s.perfusion.work_dir:
        plain.append(("[perfusion] work_dir", Path(s.perfusion.work_dir).expanduser()))
    if s.index.database_url:
        parsed = make_url(s.index.database_url)
        if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
            plain.append(("[index] database_url", Path(str(parsed.database)).expanduser()))
    for key_name, path in plain:
        where = path.resolve()
        if where == archive or archive in where.parents:
            raise ConfigError(
                f"{key_name} {where} must not live inside the archive folder {archive}: it "
                "holds patient data in plain text next to the encrypted archive"
            )


def validate(s: Settings) -> None:
    """Reject values a clinic admin could set by mistake, with the key in the message."""
    _check_ranges(s)
    if s.archive.duplicate_policy not in ("replace", "keep", "reject"):
        raise ConfigError("[archive] duplicate_policy must be 'replace', 'keep' or 'reject'")
    if s.archive.uid_conflict not in ("file", "refuse"):
        raise ConfigError("[archive] uid_conflict must be 'file' or 'refuse'")
    if not _UID_ROOT.match(s.server.uid_root) or len(s.server.uid_root.rstrip(".")) > UID_ROOT_MAX:
        raise ConfigError(
            f"[server] uid_root must be a dotted numeric UID prefix of at most {UID_ROOT_MAX} "
            f"characters (got {s.server.uid_root!r})"
        )
    # pynetdicom refused these in every DICOM worker, which was restarted forever while the
    # server said "running" (probe 16): PS3.5 9.1 (UID), PS3.7 D.3.3.2 (version name)
    uid = s.dimse.implementation_class_uid
    if not _UID.match(uid) or len(uid) > 64:
        raise ConfigError(
            "[dimse] implementation_class_uid must be a UID: digits and dots, no leading "
            f"zeros, at most 64 characters (got {len(uid)}: {uid!r})"
        )
    name = s.dimse.implementation_version_name
    if not _VERSION_NAME.match(name) or not name.strip():
        raise ConfigError(
            "[dimse] implementation_version_name must be 1-16 printable ASCII characters, no "
            f"backslash, not only spaces (PS3.7 D.3.3.2; got {name!r})"
        )
    if s.server.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("[server] log_level must be DEBUG, INFO, WARNING or ERROR")
    if s.dimse.query_scope not in ("pool", "all"):
        raise ConfigError('[dimse] query_scope must be "pool" or "all"')
    names: set[str] = set()
    ports: set[int] = set()
    titles: dict[str, PoolSection] = {}
    for p in s.pools:
        if not p.name.strip():
            raise ConfigError(
                f"[[pools]] name must not be empty or only spaces (got {p.name!r}): the apps, "
                "rights and the audit trail name a pool by it"
            )
        _check_ae_title(p.ae_title, f"[[pools]] '{p.name}': ae_title")
        _check_distinct_ae_title(p, titles)
        _port(p.port, f"[[pools]] '{p.name}': port", zero_off=True)  # 0: check_listening
        _port(p.tls_port, f"[[pools]] '{p.name}': tls_port", zero_off=True)
        if p.name in names:
            raise ConfigError(f"[[pools]] pool name '{p.name}' used twice")
        if p.port and p.port in ports:
            raise ConfigError(f"[[pools]] port {p.port} used by two pools")
        if p.tls_port and (p.tls_port in ports or p.tls_port == p.port):
            raise ConfigError(f"[[pools]] '{p.name}': tls_port {p.tls_port} already in use")
        if p.tls_port and not s.dimse.tls_cert:
            raise ConfigError(f"[[pools]] '{p.name}': tls_port needs [dimse] tls_cert and tls_key")
        names.add(p.name)
        ports.add(p.port)
        if p.tls_port:
            ports.add(p.tls_port)
    if s.pacs.calling_ae_title:  # empty = the first pool's; "  " is no AE title (probe 16)
        _check_ae_title(s.pacs.calling_ae_title, "[pacs] calling_ae_title")
    _port(s.api.port, "[api] port", zero_off=True)  # 0: refused by check_listening
    if s.api.port and s.api.port in ports:
        raise ConfigError(
            f"[api] port {s.api.port} is also a DICOM port of [[pools]]: give the API its own"
        )
    _port(s.smtp.port, "[smtp] port")
    _port(s.audit.syslog_port, "[audit] syslog_port")
    if s.accounts.device_approval not in ("automatic", "first-device", "manual"):
        raise ConfigError(
            "[accounts] device_approval must be 'automatic', 'first-device' or 'manual'"
        )
    if s.accounts.public_url and (
        not _PUBLIC_URL.match(s.accounts.public_url) or not _url_has_host(s.accounts.public_url)
    ):
        raise ConfigError(
            "[accounts] public_url must be an http:// or https:// address with a host and no "
            f"query, e.g. https://lucent.clinic.example (got {s.accounts.public_url!r})"
        )
    if s.perfusion.method not in ("osvd", "ssvd", "tikhonov"):
        raise ConfigError("[perfusion] method must be 'osvd', 'ssvd' or 'tikhonov'")
    try:  # the engine's own checks of its thresholds, at load (check-config), not per run
        PerfusionConfig.from_dict(
            {
                "method": s.perfusion.method,
                "threshold_core": s.perfusion.threshold_core,
                "threshold_tmax": s.perfusion.threshold_tmax,
                "min_island_ml": s.perfusion.min_island_ml,
            }
        )
    except ValueError as exc:
        raise ConfigError(f"[perfusion] {exc}") from exc
    if (s.dimse.tls_cert == "") != (s.dimse.tls_key == ""):
        raise ConfigError("[dimse] tls_cert and tls_key must be set together")
    if s.dimse.tls_require_client_cert and s.dimse.tls_cert and not s.dimse.tls_ca_file:
        raise ConfigError(
            "[dimse] tls_require_client_cert needs tls_ca_file (the trusted peer certificates)"
        )
    if (s.api.tls_cert == "") != (s.api.tls_key == ""):
        raise ConfigError("[api] tls_cert and tls_key must be set together")
    if not s.audit.source_id.strip():
        raise ConfigError(
            "[audit] source_id must not be empty: every audit message names its Audit Source "
            "ID (PS3.15 A.5, AuditSourceIdentification)"
        )
    if (s.audit.syslog_cert == "") != (s.audit.syslog_key == ""):
        raise ConfigError("[audit] syslog_cert and syslog_key must be set together")
    if not is_loopback(s.api.bind_address) and not s.api.tls_cert:
        raise ConfigError(
            f"[api] refusing to bind {s.api.bind_address} without TLS: set tls_cert and tls_key "
            "or bind to 127.0.0.1"
        )
    if s.index.database_url:
        problem = database_url_problem(s.index.database_url)
        if problem:
            raise ConfigError(problem)
    _check_paths(s)


#: What the index supports, in the words of every refusal of a database URL.
SUPPORTED_DATABASES = (
    "only SQLite (sqlite:///PATH) and PostgreSQL "
    "(postgresql+psycopg://user:password@host:5432/lucent) URLs are supported"
)


def database_url_problem(url: str) -> str | None:
    """Why ``[index] database_url`` cannot be used, or None. "not a url", "bogus://x" and
    "mysql://..." gave a SQLAlchemy traceback in every command (outside probe 29). The URL
    itself is not repeated: it may hold a password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"[index] database_url is not a database URL: {SUPPORTED_DATABASES}"
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in ("sqlite", "postgresql"):
        return f"[index] database_url names a '{backend}' database: {SUPPORTED_DATABASES}"
    return None


def is_loopback(address: str) -> bool:
    return address in ("127.0.0.1", "::1", "localhost") or address.startswith("127.")


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("lucent", appauthor=False)) / "server.toml"


def load(path: Path | None = None) -> Settings:
    """Load the config. Only the default location is created, from the commented sample, on
    first start; a file named with ``--config`` must exist: a mistyped path was written with
    the defaults and the command then worked on the default data directory (create-admin,
    rotate-key, run; outside probe 29)."""
    default = default_config_path()
    path = path or default
    if path != default and not path.is_file():
        raise ConfigError(
            f"no config file at {path}: check the --config path (only the default location, "
            f"{default}, is created with the defaults on first start)"
        )
    if not path.exists():
        # mode 0600: the admin adds SMTP and database passwords to it (it was 0644, probe 16);
        # a config folder we create is 0700, one that exists keeps its mode
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse(data, source=path)


def documented_keys(sample: Path = SAMPLE_CONFIG) -> set[str]:
    """Every 'section.key' the sample config sets (used by the documentation test)."""
    data = tomllib.loads(sample.read_text(encoding="utf-8"))
    keys: set[str] = set()
    for section, table in data.items():
        rows = table if isinstance(table, list) else [table]
        for row in rows:
            keys.update(f"{section}.{k}" for k in row)
    return keys


def setting_default(section: str, key: str) -> Any:
    """The default of one setting ('pools' for a [[pools]] key)."""
    cls = PoolSection if section == "pools" else _SECTIONS[section]
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    return f.default


def setting_keys() -> set[str]:
    """Every 'section.key' the Settings object knows."""
    keys = {f"{name}.{f.name}" for name, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}
    keys.update(f"pools.{f.name}" for f in dataclasses.fields(PoolSection))
    return keys
