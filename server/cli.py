"""`lucent-server`: run the server, create an administrator, rotate the archive key, make a
self-signed TLS certificate for a test install."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from server import config as config_mod
from server import logs, single_instance
from server.accounts import audit, users
from server.archive import crypto
from server.context import ServerContext, StartupError

log = logging.getLogger("lucent.server")


def _settings(path: str | None) -> tuple[config_mod.Settings, Path]:
    cfg_path = Path(path).expanduser() if path else config_mod.default_config_path()
    return config_mod.load(cfg_path), cfg_path


def _raise_file_limit() -> None:
    """Every association and HTTP client holds a descriptor: at the common soft limit of 1024
    a flood of idle HTTP clients left none for DICOM associations (outside probe). Raise the
    soft limit to the hard one, as servers do; the workers inherit it."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("lucent").warning("could not raise the open-file limit: %s", exc)


def _migration_error() -> type[Exception]:
    """Alembic's CommandError, imported only when an exception reaches the handler: alembic
    costs ~0.5 s to import, and most commands never migrate."""
    from alembic.util import CommandError

    return CommandError


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.api.app import create_app
    from server.dimse.listener import WorkerPool, check_ports_free

    settings, cfg_path = _settings(args.config)
    logs.configure(settings.server.log_level, "main")
    config_mod.check_listening(settings)
    problem = _bind_address_problem(settings) or _tls_problem(settings)  # before migrating
    if problem:
        print(f"lucent-server: {problem}", file=sys.stderr)
        return 2
    _raise_file_limit()
    try:
        lock = _lock(settings)  # before anything touches the data
    except single_instance.AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        check_ports_free(settings)  # before the index is created or migrated
    except OSError as exc:
        lock.close()
        print(f"lucent-server: {_ports_advice(exc, cfg_path)}", file=sys.stderr)
        return 2
    # SIGTERM (service stop) ends the server cleanly at any moment from here: a SIGTERM
    # during create_app, right after the banner, gave a traceback and exit 130 (probe 16)
    original = signal.signal(signal.SIGTERM, _interrupt)
    ctx: ServerContext | None = None
    started = False
    workers: WorkerPool | None = None
    forwarder: Any = None
    try:
        _check_owner(settings)  # the index belongs to this archive: before anything changes
        _private_files(settings)
        ctx = ServerContext(settings, migrate=True)  # StartupError: why, and what to check
        _own_index(ctx, settings)
        ctx.preflight()
        ctx.recover()  # re-index what a crash left unindexed, remove deleted/half-written
        try:
            check_ports_free(settings)  # again: recovery can take a while
        except OSError as exc:
            print(f"lucent-server: {_ports_advice(exc, cfg_path)}", file=sys.stderr)
            return 2
        if args.first_run_admin:
            with ctx.WriteSession() as db, db.begin():
                created = users.count_users(db) == 0
                if created:
                    password = secrets.token_urlsafe(12)
                    users.create_user(db, "admin", password, role="administrator")
            if created:
                _audit_admin_created(ctx, "admin", "--first-run-admin")
                print(
                    "\nCreated the first administrator (shown once, change it after "
                    f"login):\n  user: admin\n  password: {password}\n",
                    flush=True,
                )
        workers = WorkerPool(cfg_path, settings)
        workers.start()
        _audit_application(ctx, "app-start", settings, cfg_path)
        started = True
        for line in banner(settings, cfg_path):
            print(line, flush=True)
        if settings.audit.syslog_host:  # IHE ATNA: RFC 5424 over TLS to the audit repository
            from server.accounts.syslog import AuditForwarder

            forwarder = AuditForwarder(
                ctx.Session, settings.audit, settings.data_dir / "audit-forward.json"
            )
            forwarder.start()
            print(
                f"  Audit:     syslog over TLS to "
                f"{settings.audit.syslog_host}:{settings.audit.syslog_port}",
                flush=True,
            )
        app = create_app(ctx)
        # perfusion (issue 6): watch the index for complete perfusion series in this process
        from server.api import perfusion_routes

        perfusion_routes.start(app)
        options: dict[str, Any] = {
            "host": settings.api.bind_address,
            "port": settings.api.port,
            "ssl_certfile": settings.api.tls_cert or None,
            "ssl_keyfile": settings.api.tls_key or None,
            "log_level": "warning",
        }
        # "::": IPv4 clients too (asyncio binds it IPv6-only; outside probe 25)
        dual = _dual_stack_socket(settings.api.bind_address, settings.api.port)
        api_server = uvicorn.Server(uvicorn.Config(app, **options))
        _workers_stop_with(api_server, workers)
        api_server.run(sockets=None if dual is None else [dual])
    except KeyboardInterrupt:
        pass
    finally:
        # a second SIGTERM while stopping must not leave a traceback either: ignore it,
        # until this returns (a process running the server in-process, e.g. a test, kept
        # it ignored, and so did every program it started later: DCMTK storescp in CI)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if started and ctx is not None:  # PS3.15 A.5.3.1: Application Stop
                _audit_application(ctx, "app-stop", settings, cfg_path)
            if forwarder is not None:
                forwarder.stop()
            if workers is not None:
                workers.stop()
            if ctx is not None:
                ctx.close()
        finally:
            lock.close()
            signal.signal(signal.SIGTERM, original if original is not None else signal.SIG_DFL)
    return 0


def _workers_stop_with(api_server: Any, workers: Any) -> None:
    """The DICOM workers are told to stop at the signal that stops the API, not when its
    graceful shutdown is over: a service stop signals the whole process group, and a
    worker (or its fork server) that died of that signal was restarted meanwhile, which
    could outlive the server."""
    handle_exit = api_server.handle_exit

    def stop_both(sig: int, frame: Any) -> None:
        workers.begin_stop()
        handle_exit(sig, frame)

    api_server.handle_exit = stop_both


def _ports_advice(exc: OSError, cfg_path: Path) -> str:
    """A port in use, with the file to edit: "[api]: port 8750 is in use" left the admin to
    find which config file this server read (outside probe 35)."""
    if "in use" not in str(exc):
        return str(exc)
    return (
        f"{exc}: stop the program that holds it (another lucent-server?) or choose another "
        f"port in {cfg_path} (the pool's [[pools]] port, or [api] port)"
    )


def machine_name() -> str:
    """What other machines call this one. getfqdn() is "localhost" where /etc/hosts maps
    the host name to 127.0.0.1 only ("AE LUCENT on all addresses of localhost", outside
    probe 35): the host name is the better word then."""
    fqdn = socket.getfqdn()
    if fqdn and fqdn != "localhost" and not fqdn.startswith("localhost."):
        return fqdn
    return socket.gethostname() or fqdn or "this machine"


def primary_address() -> str | None:
    """The address of the interface with the default route, or None. A UDP connect to a
    documentation address (RFC 5737) only picks the route: no packet is sent."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else address


def _is_wildcard(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def banner(settings: config_mod.Settings, cfg_path: Path) -> list[str]:
    """The "running" lines: where the API and each pool answer. A wildcard bind address
    is no address a client can use: "https://0.0.0.0:8750" and "https://[::]:8750" stood
    there, and the DICOM lines never named the bind address, so a pool bound to 127.0.0.1
    looked reachable by modalities (outside probe 29). This machine's name stands in for a
    wildcard, as in mailed links (server.accounts.links)."""
    scheme = "https" if settings.api.tls_cert else "http"
    host = settings.api.bind_address
    everywhere = _is_wildcard(host)
    name = machine_name()
    address = primary_address() if everywhere or _is_wildcard(settings.dimse.bind_address) else None
    if everywhere:
        host = name
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL (RFC 3986)
    api = f"{scheme}://{host}:{settings.api.port}"
    reach = ""
    if everywhere:
        reach = f" (listening on all addresses{f', e.g. {address}' if address else ''})"
    dimse = settings.dimse.bind_address
    if _is_wildcard(dimse):
        where = f"all addresses of {name}{f' (e.g. {address})' if address else ''}"
        only = ""
    else:
        where = dimse
        only = (
            " (this machine only: modalities on other machines cannot reach it; "
            "see [dimse] bind_address)"
            if config_mod.is_loopback(dimse)
            else ""
        )
    lines = [
        f"Lucent server running (config: {cfg_path})",
        f"  API:       {api}/api/v1{reach}",
        f"  DICOMweb:  {api}/dicom-web",
    ]
    for pool in settings.pools:
        secure = f", DICOM TLS on port {pool.tls_port}" if pool.tls_port else ""
        lines.append(
            f"  DICOM:     pool {pool.name}: AE {pool.ae_title} on {where} port "
            f"{pool.port}{secure}{only}"
        )
    lines.append(f"  Data:      {settings.data_dir}")
    return lines


def _audit_application(
    ctx: ServerContext, event: str, settings: config_mod.Settings, cfg_path: Path
) -> None:
    """Application Activity (PS3.15 A.5.3.1, 110100) with Application Start / Stop
    (110120 / 110121): the pools (AE title, port) as participants. A failure to record is
    logged and never keeps the server from starting or stopping."""
    objects = [{"type": "pool", "id": p.ae_title.strip()} for p in settings.pools]
    what = "started" if event == "app-start" else "stopped"
    pools = ", ".join(f"{p.name} (AE {p.ae_title.strip()}, port {p.port})" for p in settings.pools)
    detail = f"lucent-server {what} (pid {os.getpid()}, config {cfg_path}; pools {pools})"
    try:
        audit.record_local(ctx.WriteSession, event, objects, detail)
    except Exception:
        log.exception("could not record the application %s in the audit trail", what)


def _audit_admin_created(ctx: ServerContext, name: str, how: str) -> None:
    """The same record as POST /users (110113 Security Alert, 110136 Security Roles
    Changed), written by the command line."""
    detail = audit.user_created("administrator", {}) + f" (command line: {how})"
    audit.record_local(ctx.WriteSession, "roles-change", [{"type": "user", "id": name}], detail)


def _lock(settings: config_mod.Settings) -> single_instance.Locks:
    """Lock every folder of this server's data: the data directory, the archive folder and
    the folder of a SQLite index (another data_dir with the same archive removed the running
    server's prepared files, probe 16)."""
    folders = [("archive folder", settings.archive_dir)]
    sqlite = _sqlite_file(settings)
    if sqlite is not None:
        folders.append(("index database folder", sqlite.parent))
    # a PostgreSQL index has no folder of ours: a second server on the same database with
    # its own folders took over the first one's instances (probe 58). Its lock comes first,
    # so a standby sharing the archive folder is told which server holds the database.
    from server.index import db

    try:
        index = db.lock_index(settings.database_url)
    except DBAPIError as exc:
        raise StartupError(_index_failure(settings.database_url, exc)) from exc
    try:
        locks = single_instance.acquire(settings.data_dir, folders)
    except BaseException:
        if index is not None:
            index.close()
        raise
    if index is not None:
        locks.add(index.close)
    return locks


def _index_failure(url: str, exc: DBAPIError) -> str:
    """Why the index database could not be reached or read, in one line."""
    from server.index import db

    reason = db.unavailable(exc)
    if reason is not None:
        return db.connection_advice(url, reason)
    return f"the index database cannot be used ({' '.join(str(exc.orig).split())})"


def _index_name(settings: config_mod.Settings) -> str:
    """The index database in words: its file, or its URL without the password."""
    from sqlalchemy import make_url

    sqlite = _sqlite_file(settings)
    if sqlite is not None:
        return str(sqlite)
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _owner_problem(settings: config_mod.Settings, recorded: str | None) -> str | None:
    return single_instance.owner_problem(
        recorded,
        single_instance.archive_id(settings.key_file),
        index=_index_name(settings),
        archive_dir=settings.archive_dir,
        key_file=settings.key_file,
    )


def _check_owner(settings: config_mod.Settings) -> None:
    """Refuse an index that records another archive, before anything is changed: a twin
    server with its own archive on the same database (or an index copied next to another
    archive) listed studies whose objects it lacked, and replaced the first server's
    instances with objects in its own archive (probe 58). An index that records none yet
    adopts this archive (``_own_index``)."""
    from server.index import db

    try:
        recorded = db.recorded_archive_id(settings.database_url)
    except DBAPIError as exc:
        raise StartupError(_index_failure(settings.database_url, exc)) from exc
    except sqlite3.DatabaseError:
        return  # a damaged file: opening the index reports it, with what to do
    problem = _owner_problem(settings, recorded)
    if problem:
        raise StartupError(problem)


def _own_index(ctx: ServerContext, settings: config_mod.Settings) -> None:
    """Record this archive in the index (its first start with this version) and this
    process as the server that opened it. The archive's id file is written first: an id in
    the index without the file would refuse the next start. A failure is logged and keeps
    nothing from starting, as before this record existed: every start tries again (the
    refusal, ``_check_owner``, is what protects the data, and it reads only)."""
    from server.index import db

    key_file = settings.key_file
    try:
        found = single_instance.archive_id(key_file) or single_instance.make_archive_id(key_file)
        db.own_index(ctx.engine, found, settings.data_dir)
    except Exception:
        log.exception("could not record this archive as the owner of the index database")


def _sqlite_file(settings: config_mod.Settings) -> Path | None:
    from sqlalchemy import make_url

    parsed = make_url(settings.database_url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _private_files(settings: config_mod.Settings) -> None:
    """The SQLite index and the quota ledger hold patient names and password hashes: create
    them mode 0600 (SQLite gives its -wal/-shm/-journal files the mode of the database), and
    tighten those of ours in the data directory that an older version made 0644 (probe 16).
    A file the admin placed elsewhere that exists already keeps its mode."""
    if os.name == "nt":
        return
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir = settings.data_dir.resolve()
    files = [settings.data_dir / "quota-reservations.sqlite3"]
    sqlite = _sqlite_file(settings)
    if sqlite is not None:
        files.append(sqlite)
    for path in files:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.resolve().parent != data_dir:
                continue
            for f in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                try:
                    if f.stat().st_mode & 0o077:
                        f.chmod(0o600)
                except OSError:  # absent, or not ours
                    pass
        except OSError:
            continue  # e.g. a missing folder: the index reports that itself
        else:
            os.close(fd)


def _bind_address_problem(settings: config_mod.Settings) -> str | None:
    """Whether each bind address can be used on this machine. "999.1.1.1" passed
    check-config and run then said "port in use (Name or service not known)" (probe 16)."""
    for key, address in (
        ("[dimse] bind_address", settings.dimse.bind_address),
        ("[api] bind_address", settings.api.bind_address),
    ):
        if all(c.isdigit() or c == "." for c in address) or ":" in address:
            try:  # an address, not a host name: no resolver (DNS) involved
                ipaddress.ip_address(address)
            except ValueError:
                return f"{key} {address!r} is not a valid IP address"
        try:
            infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return f"{key} {address!r} is not an address of this machine ({reason})"
        family, _, _, _, sockaddr = infos[0]
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((sockaddr[0], 0))
        except OSError as exc:
            return (
                f"{key} {address!r} cannot be used on this machine "
                f"({exc.strerror or exc}): use an address of one of its interfaces, "
                "0.0.0.0 for all, or 127.0.0.1"
            )
    return None


def _dual_stack_socket(address: str, port: int) -> socket.socket | None:
    """A listening socket on "::" that takes IPv4 as well, as [dimse]'s does; None for any
    other address (uvicorn binds those itself)."""
    try:
        if not ipaddress.ip_address(address).is_unspecified or ":" not in address:
            return None
    except ValueError:
        return None
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(2048)
    return sock


def _tls_problem(settings: config_mod.Settings) -> str | None:
    """Whether the TLS files can be loaded: a missing or mismatched [api] pair failed only
    after the "running" banner, naming no file, and check-config said OK for both the API's
    and DICOM's (outside probe 25)."""
    import ssl

    from server.dimse.listener import server_tls_context

    a = settings.api
    if a.tls_cert or a.tls_key:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                a.tls_cert, a.tls_key or None
            )
        except (OSError, ssl.SSLError) as exc:
            return f"[api] tls_cert {a.tls_cert!r} / tls_key {a.tls_key!r} unusable: {exc}"
    try:
        server_tls_context(settings)
    except Exception as exc:  # tls.TlsConfigError, with the file and the reason
        return f"[dimse] DICOM TLS: {exc}"
    # CA bundles and the syslog client pair: a missing file passed check-config and failed
    # only at the first send (outside probe 29)
    for key, cafile in (
        ("[pacs] tls_ca_file", settings.pacs.tls_ca_file),
        ("[audit] syslog_ca_file", settings.audit.syslog_ca_file),
    ):
        if cafile:
            try:
                ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                return f"{key} {cafile!r} unusable: {exc}"
    au = settings.audit
    if au.syslog_cert:
        try:
            ssl.create_default_context().load_cert_chain(au.syslog_cert, au.syslog_key or None)
        except (OSError, ssl.SSLError) as exc:
            pair = f"syslog_cert {au.syslog_cert!r} / syslog_key {au.syslog_key!r}"
            return f"[audit] {pair} unusable: {exc}"
    return None


def cmd_create_admin(args: argparse.Namespace) -> int:
    settings, _ = _settings(args.config)
    if not args.password_stdin:
        print("error: pass the password on standard input with --password-stdin", file=sys.stderr)
        return 2
    raw = sys.stdin.buffer.readline() if hasattr(sys.stdin, "buffer") else sys.stdin.readline()
    try:  # non-UTF-8 bytes were a UnicodeDecodeError traceback (outside probe 29)
        password = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        print(
            "error: the password on standard input is not UTF-8 text; pass it as UTF-8 "
            "(e.g. printf '%s\\n' \"$PASSWORD\" with a UTF-8 locale)",
            file=sys.stderr,
        )
        return 2
    password = password.rstrip("\r\n")
    _private_files(settings)
    ctx = ServerContext(settings, migrate=True)
    name = users.normalise(args.username)
    try:
        try:
            with ctx.WriteSession() as db, db.begin():
                users.create_user(db, args.username, password, role="administrator")
        except users.AccountError as exc:
            detail = f"user not created: {exc} (command line: create-admin)"
            objects = [{"type": "user", "id": name}]
            audit.record_local(
                ctx.WriteSession, "roles-change", objects, detail, audit.MINOR_FAILURE
            )
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _audit_admin_created(ctx, name, "create-admin")
    finally:
        ctx.close()
    print(f"administrator '{name}' created")
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    """Re-index every archive object the index lacks (e.g. after restoring an empty or older
    database next to the archive). The server must be stopped: its ports must be free."""
    from server.dimse.listener import check_ports_free

    settings, _ = _settings(args.config)
    try:
        lock = _lock(settings)
        check_ports_free(settings)
    except (single_instance.AlreadyRunning, OSError) as exc:
        print(f"error: stop the server first ({exc})", file=sys.stderr)
        return 1
    try:
        _check_owner(settings)
        _private_files(settings)
        ctx = ServerContext(settings, migrate=True)
    except BaseException:
        lock.close()
        raise
    try:
        _own_index(ctx, settings)
        audit.record_local(ctx.WriteSession, "service-start", [], "rebuild-index started")
        try:
            report = ctx.recover()
        except BaseException as exc:
            audit.record_local(
                ctx.WriteSession,
                "service-stop",
                [],
                f"rebuild-index failed: {exc!r}"[:2000],
                audit.SERIOUS_FAILURE,
            )
            raise
        missing = sum(report.unknown_keys.values())
        audit.record_local(
            ctx.WriteSession,
            "service-stop",
            [],
            f"rebuild-index: {report.recovered} re-indexed, {report.removed} removed, "
            f"{report.quarantined} quarantined, {missing} sealed with missing keys",
            audit.MINOR_FAILURE if missing else audit.SUCCESS,
        )
    finally:
        ctx.close()
        lock.close()
    print(
        f"{report.recovered} instance(s) re-indexed, {report.removed} object(s) removed, "
        f"{report.quarantined} moved to quarantine"
    )
    for reason, count in sorted(report.reasons.items()):
        print(f"  not indexed ({reason}): {count}")
    if report.unknown_keys:
        print(
            f"error: {sum(report.unknown_keys.values())} object(s) are sealed with master "
            f"keys {settings.key_file} lacks ({', '.join(sorted(report.unknown_keys))}); they "
            "were left in place: restore the key file and run rebuild-index again",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """New active master key. The server must be stopped: its processes hold the key ring
    they loaded, and a worker restarted later would seal with a key the API does not know."""
    settings, _ = _settings(args.config)
    try:
        lock = _lock(settings)
    except (single_instance.AlreadyRunning, OSError) as exc:
        print(f"error: stop the server first ({exc})", file=sys.stderr)
        return 1
    try:
        if not settings.key_file.exists():
            print(f"error: no key file at {settings.key_file} to rotate", file=sys.stderr)
            return 1
        # the index first: a key rotated without its audit record is worse than none rotated
        _check_owner(settings)
        _private_files(settings)
        ctx = ServerContext(settings, migrate=True)
        try:
            _own_index(ctx, settings)
            ring = crypto.KeyRing.load_or_create(settings.key_file)
            key_id = ring.rotate()
            # 110113 Security Alert / 110129 Security Configuration, as config changes
            audit.record_local(
                ctx.WriteSession,
                "config-change",
                [],
                f"archive master key rotated: '{key_id}' is active in {settings.key_file} "
                "(command line: rotate-key)",
            )
        finally:
            ctx.close()
    finally:
        lock.close()
    print(f"new master key '{key_id}' is active; older keys stay in {settings.key_file}")
    return 0


def cmd_make_cert(args: argparse.Namespace) -> int:
    """Self-signed pair for the API and DICOM TLS (issue 4); needs no config file."""
    from server.accounts import certs

    for host in args.host:
        if not _valid_host(host):
            print(
                f"error: --host {host!r} is neither an IP address nor a DNS name (letters, "
                "digits and hyphens in dot-separated labels of at most 63 characters)",
                file=sys.stderr,
            )
            return 2
    out = Path(args.out).expanduser()
    existing = [p for p in (out / "lucent.crt", out / "lucent.key") if p.exists()]
    if existing and not args.force:
        print(f"error: {existing[0]} exists; pass --force to replace it", file=sys.stderr)
        return 1
    try:
        pair = certs.make_self_signed(out, args.host, days=args.days)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cert, key = pair.cert.resolve(), pair.key.resolve()
    print(
        f"certificate: {cert}\nkey:         {key} (mode 0600)\n"
        f"names:       {', '.join(pair.hosts)}\nvalid until: {pair.not_after:%Y-%m-%d}\n\n"
        "Add to the server config:\n"
        f'  [api]\n  tls_cert = "{cert}"\n  tls_key = "{key}"\n'
        f'  [dimse]\n  tls_cert = "{cert}"\n  tls_key = "{key}"\n'
        "  # peers we trust (mutual TLS): this certificate, for a test install whose DICOM\n"
        "  # peers use this same pair; list your modalities' certificates or CAs instead\n"
        f'  tls_ca_file = "{cert}"\n\n'
        "Clients trust it by using the certificate file as their CA file "
        "(LucentClient(verify=...), DCMTK +cf).",
        flush=True,
    )
    return 0


_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _valid_host(host: str) -> bool:
    """An IP address or a DNS name (RFC 1123; "*." in front for a wildcard certificate)."""
    host = host.strip()
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    name = name.removesuffix(".")
    return 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split("."))


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file without starting anything. A missing file is an error here:
    loading one writes the defaults, so a mistyped path was reported "OK" (outside probe)."""
    path = Path(args.config).expanduser() if args.config else config_mod.default_config_path()
    if not path.is_file():
        print(f"lucent-server: no config file at {path}", file=sys.stderr)
        return 2
    settings, path = _settings(str(path))
    config_mod.check_listening(settings)
    problem = _bind_address_problem(settings) or _tls_problem(settings)
    if problem:
        print(f"lucent-server: {path}: {problem}", file=sys.stderr)
        return 2
    if settings.key_file.exists():
        from server.archive import crypto

        try:  # the checks every start makes: 0600, owned by us (outside probe 48)
            crypto.check_key_file(settings.key_file)
        except crypto.KeyError_ as exc:
            print(f"lucent-server: {path}: {exc}", file=sys.stderr)
            return 2
    index, in_use = _check_index(settings)
    if index.startswith("error: "):
        print(f"lucent-server: {path}: {index.removeprefix('error: ')}", file=sys.stderr)
        return 2
    print(f"{path}: OK ({len(settings.pools)} pool(s), index {index})")
    if in_use:  # check-config is run while the server runs: not an error
        print(f"note: the index database is in use by a running server ({in_use})", flush=True)
    from server.dimse.listener import busy_ports

    for line in busy_ports(settings):
        print(f"note: {line}: another program, or this server already running", flush=True)
    return 0


def _check_index(settings: config_mod.Settings) -> tuple[str, str | None]:
    """check-config's word on the index, and who holds it when a server runs on it (a
    PostgreSQL index). A database server is contacted (with the connect timeout of
    server.index.db): "OK" without connecting let a wrong password or host pass until the
    next start (probe 12). A SQLite file is not opened (opening creates it). An index that
    belongs to another archive is refused as ``run`` refuses it (probe 58)."""
    text, holder, recorded = _inspect_index(settings)
    if not text.startswith("error: "):
        problem = _owner_problem(settings, recorded)
        if problem:
            return "error: " + problem, None
    return text, holder


def _inspect_index(settings: config_mod.Settings) -> tuple[str, str | None, str | None]:
    """``_check_index``'s text, the holder of a PostgreSQL index and the archive id the index
    records (None: none yet)."""
    from sqlalchemy import make_url

    from server.index import db

    url = settings.database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            return f"SQLite file {path} (created at the first start)", None, None
        try:
            revisions, tables = _sqlite_revisions(path)
            recorded = db.recorded_archive_id(url)
        except sqlite3.Error as exc:
            return f"error: the SQLite index {path} cannot be read ({exc})", None, None
        trouble = db.unknown_revision_message(revisions) or _unversioned(revisions, tables)
        if trouble is not None:
            return "error: " + trouble, None, None
        text = f"SQLite file {path} (present, {_schema(revisions)}; opened read-only)"
        return text, None, recorded
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            tables = conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_name = 'alembic_version'"
            ).scalar()
            revisions = (
                list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
                if tables
                else []
            )
            names = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            ).scalars()
            others = len(set(names) & _lucent_tables())
            recorded = db.recorded_archive_id_on(conn)
            holder = db.index_in_use(conn)
    except DBAPIError as exc:
        reason = db.unavailable(exc) or " ".join(str(exc.orig).split())
        return "error: " + db.connection_advice(url, reason), None, None
    finally:
        engine.dispose()
    # the same refusal as ``run`` (``db.newer_revision_message``): an index a newer Lucent
    # made passed check-config and then stopped the start (outside probe)
    trouble = db.unknown_revision_message(revisions) or _unversioned(revisions, others)
    if trouble is not None:
        return "error: " + trouble, None, None
    schema = _schema(revisions) if tables else "empty: the first start creates the schema"
    shown = parsed.render_as_string(hide_password=True)
    return f"{shown}: connected (PostgreSQL {version}, {schema})", holder, recorded


def _sqlite_revisions(path: Path) -> tuple[list[str], int]:
    """The schema revisions a SQLite index names ([] when none) and how many other tables it
    holds, read without writing to it (a read-only URI: opening it the usual way would
    create or change files)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        names = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master")}
        ours = len(names & _lucent_tables())
        if "alembic_version" not in names:
            return [], ours
        revisions = [str(row[0]) for row in conn.execute("SELECT version_num FROM alembic_version")]
        return revisions, ours
    finally:
        conn.close()


def _lucent_tables() -> set[str]:
    from server.index.models import Base

    return set(Base.metadata.tables)


def _unversioned(revisions: list[str], tables: int) -> str | None:
    """Lucent's tables but no schema revision (its alembic_version row lost, or a copy made
    without it): ``run`` would create the schema over them and stop ("table ... already
    exists"), where check-config said "OK, no schema yet" (s18 note). Other programs'
    tables in a shared PostgreSQL database are not counted: the schema goes beside them."""
    if revisions or not tables:
        return None
    return (
        f"the index database holds {tables} of Lucent's tables but no schema revision (its "
        "alembic_version row was lost, or it was copied without it): restore it from a backup, "
        "or move it aside (an empty database) and run `lucent-server rebuild-index` to "
        "rebuild it from the archive"
    )


def _schema(revisions: list[str]) -> str:
    if not revisions:
        return "no schema yet: the first start creates it"
    return f"schema revision {', '.join(revisions)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lucent-server", description=__doc__)
    config_help = (
        "config file; it must exist (default: server.toml in the user config dir, "
        "written with the documented defaults on first start)"
    )
    parser.add_argument("--config", help=config_help, metavar="PATH")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="start the DICOM listeners and the API (default)")
    run.add_argument("--config", dest="config_sub", help=config_help, metavar="PATH")
    run.add_argument(
        "--first-run-admin",
        action="store_true",
        help="create an 'admin' user with a random password when no user exists, print it once",
    )
    admin = sub.add_parser("create-admin", help="create an administrator non-interactively")
    admin.add_argument("--config", dest="config_sub", help=config_help, metavar="PATH")
    admin.add_argument("--username", required=True, help="name of the new administrator")
    admin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (UTF-8; required: "
        "a password on the command line would show in the process list and shell history)",
    )
    rebuild = sub.add_parser(
        "rebuild-index", help="re-index archive objects the index lacks (server stopped)"
    )
    rebuild.add_argument("--config", dest="config_sub", help=config_help, metavar="PATH")
    rot = sub.add_parser("rotate-key", help="add a new archive master key and make it active")
    rot.add_argument("--config", dest="config_sub", help=config_help, metavar="PATH")
    chk = sub.add_parser("check-config", help="validate the config file")
    chk.add_argument("--config", dest="config_sub", help=config_help, metavar="PATH")
    cert = sub.add_parser(
        "make-cert", help="create a self-signed certificate and key for API and DICOM TLS"
    )
    cert.add_argument("--out", required=True, help="folder for lucent.crt and lucent.key")
    cert.add_argument(
        "--host",
        action="append",
        default=[],
        help="a host name or address peers use (repeatable); localhost, 127.0.0.1, ::1 always",
    )
    cert.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    cert.add_argument("--force", action="store_true", help="replace an existing pair")
    args = parser.parse_args(argv)
    if getattr(args, "config_sub", None):
        args.config = args.config_sub
    commands = {
        None: cmd_run,
        "run": cmd_run,
        "create-admin": cmd_create_admin,
        "rotate-key": cmd_rotate_key,
        "rebuild-index": cmd_rebuild_index,
        "check-config": cmd_check_config,
        "make-cert": cmd_make_cert,
    }
    if args.command is None:
        args.first_run_admin = False
    try:
        return commands[args.command](args)
    except (config_mod.ConfigError, crypto.KeyError_, StartupError, OSError) as exc:
        print(f"lucent-server: {exc}", file=sys.stderr)
        return 2
    except _migration_error() as exc:  # alembic: e.g. an index made by a newer version
        from server.index import db

        reason = db.newer_revision_message(exc) or f"index migration failed: {exc}"
        print(f"lucent-server: {reason}", file=sys.stderr)
        return 2
    except DBAPIError as exc:  # the index failed mid-command: one line, not a traceback
        print(
            f"lucent-server: index database error: {' '.join(str(exc.orig).split())}",
            file=sys.stderr,
        )
        return 2
