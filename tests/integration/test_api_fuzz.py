"""Issue 4 proof: "schemathesis (or equivalent) against /openapi.json with auth finds no 500
and no unauthenticated data".

Every operation of the real server's ``/openapi.json`` (a ``lucent-server run`` subprocess on
free loopback ports) is fuzzed twice, each as its own test so a failure names the operation:

* ``test_admin_fuzz``: with a valid administrator bearer token, schemathesis-generated path,
  query, header and body values (positive and negative data; for reads also with the real
  study/series/instance of the seeded archive). No answer may be a 5xx; every status must be
  declared in the operation's responses or be a 4xx; declared 2xx JSON answers must match
  their response schema.
* ``test_no_data_without_login``: the same operations without credentials, with a garbage
  bearer token, garbage Basic credentials and a logged-out token, also with real object ids
  in the path. Only the routes in ``PUBLIC_BY_DESIGN`` may answer anything but 401, and
  none of them hands out data for generated input.

Tool: schemathesis's Python API makes the cases (``APIOperation.as_strategy``); the loop is a
plain Hypothesis ``@given`` per operation, derandomized with a fixed number of examples and
no shrinking, so CI is reproducible and its time bounded. Not used: the schemathesis pytest
plugin's ``schema.parametrize`` (it did not work with pytest 9.2) and ``schemathesis run``
as a subprocess (one opaque run: no test, timing or time budget per operation, and no
throw-away token for the logout route, which would end the fuzzer's own session).

Safety and time: every request has a short timeout, so a hang fails the test of the
operation that hung; the remote nodes the fuzzer may create point at a loopback port that
refuses connections (``host``/``port`` pinned in the schema copy we generate from), so no
DICOM association and no DNS lookup leaves the machine; the login lockout limits of the test
server are raised so the fuzzer cannot lock itself out (production defaults unchanged).
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance

from server.accounts import rights
from tests.integration.dicom_io import storescu
from tests.integration.test_accounts_support import ct_bytes
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer
from tests.support.peers import free_port

#: Examples per operation with the admin token. CI keeps 20 (30 took ~200 s of CI worker
#: time on a slow day, with the suite at the 30-minute budget); LUCENT_FUZZ_EXAMPLES=500
#: makes a deeper local run. Anonymous calls get a third of it (6, one of the 7 ways of
#: calling without a login drawn per example): whether a route refuses depends on the route
#: and the credentials, not on the generated values.
ADMIN_EXAMPLES = int(os.environ.get("LUCENT_FUZZ_EXAMPLES", "20"))
ANON_EXAMPLES = max(1, ADMIN_EXAMPLES // 3)
#: Per request: a hang becomes a failure naming the operation, not a stuck CI.
REQUEST_TIMEOUT = (3.0, 10.0)
#: Per operation (all its examples): generous for the 2-core CI machine under load.
OPERATION_BUDGET_S = 60.0 * max(1.0, ADMIN_EXAMPLES / 30)

#: Routes that answer without a login, and why that is safe. The test checks that this is
#: exactly the set of ``public`` rules in ``server.accounts.rights.POLICY``, so a new public
#: route must be justified here. (``/openapi.json``, ``/docs`` and ``/redoc`` are FastAPI's
#: documentation, not operations of the document; the server has no separate health route:
#: ``/api/v1/status`` needs a login.)
PUBLIC_BY_DESIGN: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/login"): "the login itself: a token only for the right password",
    ("POST", "/api/v1/auth/pin"): "second login step: needs the challenge and the mailed PIN",
    ("POST", "/api/v1/auth/password-reset"): "asks for a reset mail; one 202 answer for any "
    "name, so it tells nothing (not even whether the user exists)",
    ("POST", "/api/v1/auth/password-reset/confirm"): "needs the mailed single-use token",
    ("GET", "/reset"): "the page the mailed reset link opens: one static form, no data; the "
    "token is read and checked by the confirm route",
    ("GET", "/share/{token}"): "the share link's PIN entry page (HTML form, no patient data)",
    ("POST", "/share/{token}/pin"): "PIN check of a share link (counted, blocked, audited)",
    ("GET", "/share/{token}/content"): "needs the viewing cookie that the right PIN sets",
    ("GET", "/share/{token}/frames/{index}"): "needs the viewing cookie that the right PIN sets",
}

OPERATIONS = sorted(rights.POLICY, key=lambda mp: (mp[1], mp[0]))
OWN_STUDY = "1.2.826.0.1.3680043.8.498.77.1"  # pool DEFAULT
OTHER_STUDY = "1.2.826.0.1.3680043.8.498.77.2"  # pool OTHER
#: Requests sent per (phase, method, path), for the summary at the end of the module.
EXAMPLES: dict[tuple[str, str, str], int] = {}


def _op_id(op: tuple[str, str]) -> str:
    return f"{op[0]} {op[1]}"


@dataclass
class Target:
    server: LucentServer
    schema: Any  # schemathesis OpenApiSchema of the (loopback-pinned) document
    document: dict[str, Any]
    known: dict[str, Any]  # real path values: study, series, instance, node, share, ...
    patient_name: str
    session: requests.Session = field(default_factory=requests.Session)
    token: str = ""

    @property
    def base_url(self) -> str:
        return self.server.api_url

    def login(self) -> str:
        return _login(self.base_url)

    def admin_headers(self) -> dict[str, str]:
        if not self.token:
            self.token = self.login()
        return {"Authorization": f"Bearer {self.token}"}


def _login(base_url: str) -> str:
    """A fresh administrator session (no device identity: device decisions cannot end it)."""
    r = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _refusing_port() -> tuple[socket.socket, int]:
    """A loopback port that is bound (nobody else can take it) but never listens: every
    connection to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


#: ISO 8601 date and time, offset optional (see ``_fuzzing_document``).
_TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$"


def _fuzzing_document(document: dict[str, Any], port: int) -> dict[str, Any]:
    """The copy of /openapi.json we generate from and validate against.

    * Remote nodes only ever on the refusing loopback port (``RemoteNodeIn`` host/port).
    * Answer timestamps (only the component schemas carry them; query parameters keep
      their ``date-time`` format for generation) are checked as ISO 8601 with an optional
      offset: the server answers naive UTC times (SQLite keeps no zone), which JSON Schema's
      RFC 3339 ``date-time`` would refuse. Known and left as it is: every client parses them.
    """
    doc = copy.deepcopy(document)
    props = doc["components"]["schemas"]["RemoteNodeIn"]["properties"]
    props["host"] = {"type": "string", "enum": ["127.0.0.1", "localhost"]}
    props["port"] = {"type": "integer", "enum": [port]}

    def relax(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("format") == "date-time":
                del node["format"]
                node["pattern"] = _TIMESTAMP
            for value in node.values():
                relax(value)
        elif isinstance(node, list):
            for value in node:
                relax(value)

    relax(doc["components"]["schemas"])
    return doc


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    refusing, refused_port = _refusing_port()
    server = LucentServer(
        tmp / "server",
        workers=1,
        # A second pool that the regression tests' radiologist may not read.
        pools=[
            {"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()},
            {"name": "OTHER", "ae_title": "OTHERPOOL", "port": free_port()},
        ],
        settings={
            # The fuzzer sends thousands of wrong logins from one address: keep the lockout,
            # but far above what it reaches (production defaults: 5 per name, 20 per address).
            "accounts": {
                "max_failures": 1_000_000,
                "address_max_failures": 1_000_000,
                "retention_interval_minutes": 0.0,
            },
            "perfusion": {"auto_start": False},
        },
    )
    with server:
        for name, uid in (("DEFAULT", OWN_STUDY), ("OTHER", OTHER_STUDY)):
            pool = next(p for p in server.pools if p["name"] == name)
            (tmp / f"{name}.dcm").write_bytes(
                ct_bytes(tmp, study_uid=uid, series_uid=f"{uid}.1", patient_name=f"{name}^Patient")
            )
            sent = storescu("127.0.0.1", pool["port"], pool["ae_title"], [tmp / f"{name}.dcm"])
            assert sent.returncode == 0, sent.stderr
        api = server.client()
        [study] = api.studies(pool="DEFAULT")
        assert study.study_uid == OWN_STUDY
        [series] = api.series(study.study_uid)
        [instance] = api.instances(series.series_uid)
        base = server.api_url
        token = _login(base)
        auth = {"Authorization": f"Bearer {token}"}
        node = httpx.post(
            f"{base}/api/v1/nodes",
            headers=auth,
            json={"name": "refusing", "ae_title": "NOBODY", "host": "127.0.0.1",
                  "port": refused_port, "timeout": 2.0},
        )  # fmt: skip
        assert node.status_code == 201, node.text
        node_id = node.json()["id"]
        job = httpx.post(
            f"{base}/api/v1/pacs/send",
            headers=auth,
            json={"node_id": node_id, "study_uid": study.study_uid},
            timeout=30,
        )
        assert job.status_code in (200, 201, 202), job.text
        share = httpx.post(
            f"{base}/api/v1/shares",
            headers=auth,
            json={"study_uid": study.study_uid, "expires_hours": 24},
        )
        assert share.status_code == 201, share.text
        group = httpx.post(f"{base}/api/v1/groups", headers=auth, json={"name": "fuzz-group"})
        assert group.status_code == 201, group.text
        document = httpx.get(f"{base}/openapi.json", timeout=30).json()
        known = {
            "study_uid": study.study_uid,
            "study": study.study_uid,
            "series_uid": series.series_uid,
            "series": series.series_uid,
            "sop_uid": instance.sop_instance_uid,
            "sop": instance.sop_instance_uid,
            "number": 1,
            "frames": "1",
            "index": 0,
            "node_id": node_id,
            "job_id": job.json()["id"],
            "share_id": share.json()["id"],
            "token": share.json()["url"].rsplit("/", 1)[1],
            "username": ADMIN_USER,
            "name": "fuzz-group",
        }
        schema = schemathesis.openapi.from_dict(_fuzzing_document(document, refused_port))
        # Credentials are ours to set per request (see _call), never generated or left out.
        schema.config.generation.update(with_security_parameters=False)
        fuzz = Target(server, schema, document, known, study.patient_name, token=token)
        yield fuzz
        fuzz.session.close()  # no idle keep-alive connection for the server to wait for
    refusing.close()


# ---------------------------------------------------------------------- helpers
def _operation(target: Target, method: str, path: str) -> Any:
    return target.schema[path][method]


def _path_names(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)


def _strategy(target: Target, method: str, path: str, *, real_ids: bool) -> Any:
    """Positive and negative cases, plus (if asked) cases with real objects in the path."""
    op = _operation(target, method, path)
    choices = [op.as_strategy(GenerationMode.POSITIVE)]
    if _has_inputs(op):
        choices.append(op.as_strategy(GenerationMode.NEGATIVE))
    names = _path_names(path)
    if real_ids and names and all(n in target.known for n in names):
        fixed = {n: target.known[n] for n in names}
        choices.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    return st.one_of(*choices)


def _has_inputs(op: Any) -> bool:
    raw = op.definition.raw
    return bool(raw.get("parameters")) or "requestBody" in raw


def _call(target: Target, case: Any, headers: dict[str, str]) -> tuple[Any, str, str]:
    """Send ``case`` with exactly the credentials in ``headers`` (any generated
    Authorization dropped). Returns (response or None, why none, the request in words)."""
    kwargs = case.as_transport_kwargs(base_url=target.base_url)
    sent = {k: v for k, v in kwargs["headers"].items() if k.lower() != "authorization"}
    kwargs["headers"] = {**sent, **headers}
    description = _describe(kwargs, headers)
    for attempt in (1, 2):
        try:
            response = target.session.request(
                **kwargs, timeout=REQUEST_TIMEOUT, allow_redirects=False
            )
        except requests.Timeout:
            return None, f"no answer within {REQUEST_TIMEOUT[1]:g} s", description
        except requests.ConnectionError as exc:
            if attempt == 1:  # a kept-alive connection the server had closed: once more
                target.session.close()
                continue
            return None, f"request failed: {exc}", description
        return response, "", description
    raise AssertionError("unreachable")


def _describe(kwargs: dict[str, Any], headers: dict[str, str]) -> str:
    """The request as a reader can replay it (credentials shown only by kind)."""
    fields = ("method", "url", "params", "data", "json", "files")
    try:
        prepared = requests.Request(**{k: kwargs[k] for k in fields if k in kwargs}).prepare()
        body = prepared.body if isinstance(prepared.body, str | bytes | None) else "<stream>"
        text = f"{prepared.method} {prepared.url}"
        if body:
            text += f" body={body[:300]!r}"
    except Exception as exc:  # noqa: BLE001 - only a description for the failure message
        text = f"{kwargs.get('method')} {kwargs.get('url')} ({exc})"
    auth = headers.get("Authorization", "")
    return text + (f" [Authorization: {auth.split(' ')[0]} ...]" if auth else " [no login]")


def _fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,  # reproducible in CI: the same cases every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, all failures
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------------- tests
def test_every_operation_is_fuzzed(target: Target) -> None:
    """The document's operations are exactly the parametrized ones (and the policy's)."""
    documented = {
        (m.upper(), p)
        for p, ops in target.document["paths"].items()
        for m in ops
        if m in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    assert documented == set(OPERATIONS)
    assert len(OPERATIONS) >= 90
    public = {k for k, rule in rights.POLICY.items() if rule.kind == "public"}
    assert public == set(PUBLIC_BY_DESIGN)


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[_op_id(o) for o in OPERATIONS])
def test_admin_fuzz(target: Target, method: str, path: str) -> None:
    op = _operation(target, method, path)
    declared = set(op.definition.raw.get("responses", {}))
    public = (method, path) in PUBLIC_BY_DESIGN
    failures: list[str] = []
    calls = 0
    started = time.monotonic()

    @_fuzz_settings(ADMIN_EXAMPLES)
    @given(case=_strategy(target, method, path, real_ids=method == "GET"))
    def run(case: Any) -> None:
        nonlocal calls
        if time.monotonic() - started > OPERATION_BUDGET_S:
            return
        if (method, path) == ("POST", "/api/v1/auth/logout"):
            headers = {"Authorization": f"Bearer {target.login()}"}  # a token to throw away
        else:
            headers = target.admin_headers()
        response, problem, request = _call(target, case, headers)
        calls += 1
        if response is None:
            failures.append(f"{problem}: {request}")
            return
        status = response.status_code
        what = f"{status} {response.text[:200]!r} for {request}"
        if status >= 500:
            failures.append(f"server error {what}")
        elif str(status) not in declared and not 400 <= status < 500:
            failures.append(f"undeclared status {what}")
        elif status == 401 and not public:
            failures.append(f"the admin token was refused {what}")
            target.token = ""
        elif 200 <= status < 300 and str(status) in declared:
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except Exception as exc:  # noqa: BLE001 - any check failure is reported
                failures.append(f"answer does not match its schema ({exc!s:.300}) {what}")

    run()
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failure(s) in {method} {path}:\n" + "\n".join(
        failures[:10]
    )
    assert elapsed <= OPERATION_BUDGET_S, f"{method} {path} took {elapsed:.0f} s ({calls} calls)"
    assert calls >= 1, f"no example ran for {method} {path}"
    EXAMPLES[("admin", method, path)] = calls


@pytest.fixture(scope="module")
def anonymous(target: Target) -> list[tuple[str, dict[str, str]]]:
    """The ways of calling without a valid login: (what it is, headers)."""
    revoked = target.login()
    r = httpx.post(
        f"{target.base_url}/api/v1/auth/logout", headers={"Authorization": f"Bearer {revoked}"}
    )
    assert r.status_code == 204
    return [
        ("no credentials", {}),
        ("garbage bearer token", {"Authorization": "Bearer " + "A" * 43}),
        ("short bearer token", {"Authorization": "Bearer not-a-token"}),
        ("logged-out session token", {"Authorization": f"Bearer {revoked}"}),
        ("Basic without colon", {"Authorization": "Basic Z2FyYmFnZQ=="}),
        ("Basic admin:wrong", {"Authorization": "Basic YWRtaW46d3Jvbmc="}),
        ("unknown scheme", {"Authorization": "Token abc"}),
    ]


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[_op_id(o) for o in OPERATIONS])
def test_no_data_without_login(
    target: Target, anonymous: list[tuple[str, dict[str, str]]], method: str, path: str
) -> None:
    public = (method, path) in PUBLIC_BY_DESIGN
    secrets_in_data = [
        target.patient_name,
        "OTHER^Patient",
        OTHER_STUDY,
        str(target.known["study_uid"]),
        str(target.known["series_uid"]),
        str(target.known["sop_uid"]),
    ]
    failures: list[str] = []
    calls = 0
    started = time.monotonic()

    @_fuzz_settings(ANON_EXAMPLES)
    @given(
        case=_strategy(target, method, path, real_ids=True),
        variant=st.sampled_from(anonymous),
    )
    def run(case: Any, variant: tuple[str, dict[str, str]]) -> None:
        nonlocal calls
        if time.monotonic() - started > OPERATION_BUDGET_S:
            return
        label, headers = variant
        response, problem, request = _call(target, case, headers)
        calls += 1
        if response is None:
            failures.append(f"{problem}: {request} ({label})")
            return
        status = response.status_code
        text = response.text
        what = f"{status} {text[:200]!r} for {request} ({label})"
        if status >= 500:
            failures.append(f"server error {what}")
        elif not public:
            if status != 401 and not _is_parse_error(status, text):
                failures.append(f"not refused {what}")
            elif status == 401 and set(_json(text)) != {"detail"}:
                failures.append(f"refusal carries more than a reason {what}")
        elif 200 <= status < 400 and not _public_answer_is_harmless(method, path, status, text):
            failures.append(f"public route answered with content {what}")
        if any(s and s in text for s in secrets_in_data):
            failures.append(f"patient data in an anonymous answer {what}")

    run()
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failure(s) in {method} {path}:\n" + "\n".join(
        failures[:10]
    )
    assert elapsed <= OPERATION_BUDGET_S, f"{method} {path} took {elapsed:.0f} s ({calls} calls)"
    assert calls >= 1, f"no example ran for {method} {path}"
    EXAMPLES[("anonymous", method, path)] = calls


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"<not json>": text[:80]}
    return value if isinstance(value, dict) else {"<not an object>": value}


def _is_parse_error(status: int, text: str) -> bool:
    """FastAPI reads and validates a JSON body before any dependency (the login check among
    them) runs: 400 for bytes that are no JSON, 422 for JSON that is not the schema. Both
    only tell the caller about their own input, which the public /openapi.json describes."""
    body = _json(text)
    if status == 400:
        return body == {"detail": "There was an error parsing the body"}
    return status == 422 and set(body) == {"detail"} and isinstance(body["detail"], list)


def _public_answer_is_harmless(method: str, path: str, status: int, text: str) -> bool:
    if (method, path) == ("POST", "/api/v1/auth/password-reset"):
        return status == 202 and set(_json(text)) == {"detail"}
    if (method, path) == ("GET", "/share/{token}"):  # the PIN form (patient data: see caller)
        return status == 200 and "pin" in text.lower()
    if (method, path) == ("GET", "/reset"):  # the static new-password form
        return status == 200 and "new-password" in text
    return False


def test_fuzzer_stayed_on_loopback(target: Target) -> None:
    """Every remote node the fuzzer made points at loopback (no traffic left the machine);
    prints how many requests each phase sent (pytest -s shows it)."""
    r = httpx.get(f"{target.base_url}/api/v1/nodes", headers=target.admin_headers())
    assert r.status_code == 200
    assert {n["host"] for n in r.json()} <= {"127.0.0.1", "localhost"}
    for phase in ("admin", "anonymous"):
        counts = [n for (p, _, _), n in EXAMPLES.items() if p == phase]
        print(f"api fuzz, {phase}: {sum(counts)} requests over {len(counts)} operations")


# ---------------------------------------------------------------------- regressions
# The fuzzer's findings, each pinned by a plain test (the fuzzer itself is derandomized and
# bounded, so it need not hit the same input again).
BIG = 2**64  # beyond the 64-bit integers SQL stores


@pytest.mark.parametrize(
    "method,url,body,expected",
    [
        ("DELETE", f"/api/v1/nodes/{BIG}", None, 422),
        ("PUT", f"/api/v1/nodes/{BIG}", "node", 422),
        ("POST", f"/api/v1/nodes/{BIG}/echo", None, 422),
        ("GET", f"/api/v1/pacs/nodes/{BIG}/options", None, 422),
        ("GET", f"/api/v1/jobs/{BIG}", None, 422),
        ("POST", f"/api/v1/jobs/{BIG}/cancel", None, 422),
        ("GET", f"/api/v1/jobs/{BIG}/instances", None, 422),
        ("GET", f"/api/v1/pacs/commitments?node_id={BIG}&job_id=-{BIG}", None, 422),
        ("POST", f"/api/v1/devices/{BIG}/approve", None, 422),
        ("POST", f"/api/v1/devices/{BIG}/revoke", None, 422),
        ("GET", f"/api/v1/perfusion/runs/{BIG}", None, 422),
        ("GET", f"/api/v1/perfusion/runs/{BIG}/result", None, 422),
        ("POST", f"/api/v1/perfusion/runs/{BIG}/cancel", None, 422),
        ("DELETE", f"/api/v1/shares/{BIG}", None, 422),
        ("GET", f"/api/v1/studies?offset={BIG}", None, 422),
        ("GET", f"/api/v1/patients?offset={BIG}", None, 422),
        ("GET", f"/api/v1/audit?offset={BIG}", None, 422),
        ("GET", f"/api/v1/audit?outcome={BIG}", None, 422),
        ("POST", "/api/v1/pacs/send", {"node_id": BIG, "study_uid": OWN_STUDY}, 404),
        ("POST", "/api/v1/pacs/retrieve", {"node_id": BIG, "study_uid": OWN_STUDY}, 404),
        ("POST", "/api/v1/pacs/commit", {"node_id": BIG, "sop_instance_uids": ["1.2"]}, 404),
        ("POST", "/api/v1/pacs/query", {"node_ids": [BIG], "keys": {}}, 404),
        ("GET", f"/dicom-web/studies?offset={BIG}", None, 200),
        ("GET", "/dicom-web/studies?limit=ten", None, 400),
        ("GET", "/dicom-web/instances?offset=first", None, 400),
    ],
)
def test_numbers_out_of_range_are_refused_not_a_500(
    target: Target, method: str, url: str, body: Any, expected: int
) -> None:
    if body == "node":
        body = {"name": "n", "ae_title": "N", "host": "127.0.0.1", "port": 104}
    r = target.session.request(
        method, target.base_url + url, json=body, headers=target.admin_headers(), timeout=30
    )
    assert r.status_code == expected, r.text


@pytest.mark.parametrize(
    "url,expected",
    [
        # Query keys: a UID list of blanks is no restriction (it used to be an IndexError).
        ("/api/v1/studies?study_uid=%5C", 200),
        ("/api/v1/patients?study_uid=%20%5C%20", 200),
        ("/api/v1/placeholders?study_uid=%5C", 200),
        ("/dicom-web/studies?StudyInstanceUID=%5C", 200),
        ("/dicom-web/series?SeriesInstanceUID=%C2%85", 200),
        # Path UIDs name one object: a list or a blank names nothing.
        ("/dicom-web/studies/%5C/instances", 404),
        ("/dicom-web/studies/%C2%85/series", 404),
        ("/dicom-web/studies/%C2%85/metadata", 404),
        (f"/dicom-web/studies/{OWN_STUDY}/series/%5C", 404),
        (f"/dicom-web/studies/{OWN_STUDY}/series/%20/metadata", 404),
    ],
)
def test_blank_and_listed_uids_are_answered_not_a_500(
    target: Target, url: str, expected: int
) -> None:
    r = target.session.get(target.base_url + url, headers=target.admin_headers(), timeout=30)
    assert r.status_code == expected, r.text
    if expected == 200 and url.startswith("/api/v1/studies"):
        assert OWN_STUDY in r.text  # universal matching, not "nothing matches"


def test_wado_path_uids_do_not_reach_other_pools(target: Target) -> None:
    """A radiologist who may read pool DEFAULT only. WADO paths with a backslash-joined
    UID list once returned studies of pool OTHER too (the rights check looked the whole
    text up as one UID, found nothing, and the WADO query applied no pool narrowing)."""
    admin = target.admin_headers()
    r = httpx.post(
        f"{target.base_url}/api/v1/users",
        headers=admin,
        json={"username": "fuzz-reader", "password": "a-long-enough-password",
              "role": "radiologist", "grants": {"DEFAULT": ["read"]}},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{target.base_url}/api/v1/auth/login",
        json={"username": "fuzz-reader", "password": "a-long-enough-password"},
        timeout=30,
    )
    reader = {"Authorization": f"Bearer {r.json()['token']}"}
    own, other = OWN_STUDY, OTHER_STUDY
    base = f"{target.base_url}/dicom-web/studies"
    assert httpx.get(f"{base}/{own}/metadata", headers=reader).status_code == 200
    assert httpx.get(f"{base}/{other}/metadata", headers=reader).status_code == 404
    assert httpx.get(f"{base}/{other}/metadata", headers=admin).status_code == 200
    for path in (
        f"{other}%5C{own}/metadata",
        f"{other}%5C{own}",
        f"{own}%5C{other}/series/{other}.1%5C{own}.1/metadata",
        f"{other}%5C/series/{other}.1/instances",
    ):
        r = httpx.get(f"{base}/{path}", headers=reader)
        assert r.status_code == 404, (path, r.status_code)
        assert other not in r.text and "OTHER^Patient" not in r.text


@pytest.mark.parametrize("timeout", [0, -1, 1e300, 3601])
def test_remote_node_timeout_must_be_usable(target: Target, timeout: float) -> None:
    """1e300 s broke the socket setup of a C-ECHO, negative ones waited 30 s for a silent
    host, and a node of days held a synchronous C-ECHO request for days."""
    node = {"name": f"t{timeout}", "ae_title": "T", "host": "127.0.0.1", "port": 104}
    r = httpx.post(
        f"{target.base_url}/api/v1/nodes",
        headers=target.admin_headers(),
        json={**node, "timeout": timeout},
        timeout=30,
    )
    assert r.status_code == 422 and "timeout" in r.text, r.text


@pytest.mark.parametrize(
    ("host", "ok"),
    [("__not_in_enum__", False), ("pacs host", False), ("-pacs.example", False),
     ("a" * 64 + ".example", False), ("pacs-01.radiology.example.org", True),
     ("10.0.0.7", True), ("fe80::1", True), ("[::1]", True), ("PACS.", True),
     ("fe80::1%lo", False), ("[fe80::fc:ff:fe00:1%eth0]", False)],
)  # fmt: skip
def test_remote_node_host_must_be_an_address_or_host_name(
    target: Target, host: str, ok: bool
) -> None:
    """The negative fuzzer filed a node at '__not_in_enum__'; such a name can only fail
    later, at a C-ECHO or a send, with a resolver error instead of a clear refusal now."""
    node = {"name": f"h-{host[:20]}", "ae_title": "H", "host": host, "port": 104}
    r = httpx.post(
        f"{target.base_url}/api/v1/nodes", headers=target.admin_headers(), json=node, timeout=30
    )
    if ok:
        assert r.status_code == 201, r.text
        httpx.delete(
            f"{target.base_url}/api/v1/nodes/{r.json()['id']}",
            headers=target.admin_headers(),
            timeout=30,
        )
    else:
        assert r.status_code == 422 and "host" in r.text, r.text
