"""Roles, rights per data pool, and the route policy that every API request passes through.

Issue 4: "which data pools each user/group may read, send, share, delete. Every API route
checks rights". Two kinds of rights:

* pool rights (read, import, send, share, delete) hold per data pool. A user's rights on a
  pool are those that their role allows (the ceiling) AND that a grant to the user or to one
  of their groups gives on that pool (or on ``*``). Administrators hold every right on every
  pool without grants. Deny by default: a new non-admin user sees no data until granted.
* capabilities (users, devices, audit, configure) are global and come from the role alone.

``POLICY`` maps each route (method, path template) to one ``Rule``. The app-wide dependency
in ``server.api.auth.authorize`` looks the matched route up; a route with no entry is refused
for everybody but administrators, and a unit test fails until the entry is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from server.index.account_models import GroupMember, PoolGrant

POOL_RIGHTS = ("read", "import", "send", "share", "delete")
CAPABILITIES = ("users", "devices", "audit", "configure")
ROLES = ("administrator", "clinic-it", "radiologist", "referring-physician", "guest")

#: What each role may ever do (HIPAA §164.312(a)(1): access only to those granted rights).
ROLE_RIGHTS: dict[str, frozenset[str]] = {
    "administrator": frozenset(POOL_RIGHTS + CAPABILITIES),
    # Clinic IT runs the system (users, devices, nodes, audit) but reads no patient data.
    "clinic-it": frozenset({"users", "devices", "audit", "configure"}),
    "radiologist": frozenset({"read", "import", "send", "share"}),
    "referring-physician": frozenset({"read", "share"}),
    "guest": frozenset({"read"}),
}

Kind = Literal["public", "user", "capability", "pool", "any-pool", "admin"]


@dataclass(frozen=True)
class Rule:
    """What a route needs: nothing (public), a login, a capability or a pool right.

    For ``pool`` rules the pool is that of the study/series/instance named in the path, or
    the ``pool`` query parameter; listings without one are narrowed to the readable pools.
    """

    kind: Kind
    right: str = ""
    audit: str = ""  # "query" / "view" / "export": data-access audit event for this route


PUBLIC = Rule("public")
USER = Rule("user")


def cap(name: str) -> Rule:
    return Rule("capability", name)


def pool(right: str, audit: str = "") -> Rule:
    return Rule("pool", right, audit)


def any_pool(right: str, audit: str = "") -> Rule:
    return Rule("any-pool", right, audit)


_A = "/api/v1"
_W = "/dicom-web"

POLICY: dict[tuple[str, str], Rule] = {
    # ---------------------------------------------------------------- auth (own account)
    ("POST", f"{_A}/auth/login"): PUBLIC,
    ("POST", f"{_A}/auth/pin"): PUBLIC,
    ("POST", f"{_A}/auth/password-reset"): PUBLIC,
    ("POST", f"{_A}/auth/password-reset/confirm"): PUBLIC,
    ("POST", f"{_A}/auth/logout"): USER,
    ("GET", f"{_A}/auth/me"): USER,
    ("POST", f"{_A}/auth/password"): USER,
    ("GET", f"{_A}/auth/sessions"): USER,
    ("GET", "/reset"): PUBLIC,  # the mailed reset link's page: a static form, no data
    # ---------------------------------------------------------------- archive
    ("GET", f"{_A}/pools"): USER,
    ("GET", f"{_A}/status"): USER,
    ("GET", f"{_A}/patients"): pool("read", "query"),
    ("GET", f"{_A}/studies"): pool("read", "query"),
    ("GET", f"{_A}/placeholders"): pool("read", "query"),
    ("GET", f"{_A}/studies/{{study_uid}}/series"): pool("read", "query"),
    ("GET", f"{_A}/series/{{series_uid}}/instances"): pool("read", "query"),
    ("GET", f"{_A}/instances/{{sop_uid}}"): pool("read", "query"),
    ("GET", f"{_A}/instances/{{sop_uid}}/file"): pool("read", "export"),
    ("GET", f"{_A}/instances/{{sop_uid}}/frames/{{number}}"): pool("read", "view"),
    ("GET", f"{_A}/series/{{series_uid}}/geometry"): pool("read", "view"),
    ("GET", f"{_A}/series/{{series_uid}}/volume"): pool("read", "view"),
    ("DELETE", f"{_A}/studies/{{study_uid}}"): pool("delete"),
    # ---------------------------------------------------------------- DICOMweb
    ("GET", f"{_W}/studies"): pool("read", "query"),
    ("GET", f"{_W}/series"): pool("read", "query"),
    ("GET", f"{_W}/instances"): pool("read", "query"),
    ("GET", f"{_W}/studies/{{study}}/series"): pool("read", "query"),
    ("GET", f"{_W}/studies/{{study}}/instances"): pool("read", "query"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances"): pool("read", "query"),
    ("GET", f"{_W}/studies/{{study}}"): pool("read", "export"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}"): pool("read", "export"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}"): pool("read", "export"),
    ("GET", f"{_W}/studies/{{study}}/metadata"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/metadata"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/metadata"): pool(
        "read", "view"
    ),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/frames/{{frames}}"): pool(
        "read", "view"
    ),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/rendered"): pool(
        "read", "view"
    ),
    # Rendered images, thumbnails and bulk data (PS3.18 Table 10.4.1-1): viewing, not export.
    ("GET", f"{_W}/studies/{{study}}/rendered"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/rendered"): pool("read", "view"),
    (
        "GET",
        f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/frames/{{frames}}/rendered",
    ): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/thumbnail"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/thumbnail"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/thumbnail"): pool(
        "read", "view"
    ),
    (
        "GET",
        f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/frames/{{frames}}/thumbnail",
    ): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/bulkdata"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/bulkdata"): pool("read", "view"),
    ("GET", f"{_W}/studies/{{study}}/series/{{series}}/instances/{{sop}}/bulkdata"): pool(
        "read", "view"
    ),
    ("POST", f"{_W}/studies"): pool("import"),
    ("POST", f"{_W}/studies/{{study}}"): pool("import"),
    # ---------------------------------------------------------------- remote nodes, PACS
    ("GET", f"{_A}/nodes"): USER,
    ("POST", f"{_A}/nodes"): cap("configure"),
    ("PUT", f"{_A}/nodes/{{node_id}}"): cap("configure"),
    ("DELETE", f"{_A}/nodes/{{node_id}}"): cap("configure"),
    ("POST", f"{_A}/nodes/{{node_id}}/echo"): USER,
    ("GET", f"{_A}/pacs/nodes/{{node_id}}/options"): USER,
    ("PUT", f"{_A}/pacs/nodes/{{node_id}}/options"): cap("configure"),
    ("POST", f"{_A}/pacs/query"): any_pool("read", "query"),
    ("POST", f"{_A}/pacs/retrieve"): any_pool("import"),
    ("POST", f"{_A}/pacs/send"): any_pool("send"),
    ("POST", f"{_A}/pacs/commit"): any_pool("send"),
    ("GET", f"{_A}/jobs"): USER,
    ("GET", f"{_A}/jobs/{{job_id}}"): USER,
    ("POST", f"{_A}/jobs/{{job_id}}/cancel"): USER,
    ("POST", f"{_A}/jobs/{{job_id}}/retry"): any_pool("send"),
    ("GET", f"{_A}/jobs/{{job_id}}/instances"): USER,
    ("GET", f"{_A}/pacs/commitments"): USER,
    # ---------------------------------------------------------------- perfusion
    ("GET", f"{_A}/perfusion/examine/{{series_uid}}"): pool("read", "view"),
    ("POST", f"{_A}/perfusion/runs"): any_pool("import"),
    ("GET", f"{_A}/perfusion/runs"): any_pool("read"),
    ("GET", f"{_A}/perfusion/runs/{{run_id}}"): any_pool("read"),
    ("POST", f"{_A}/perfusion/runs/{{run_id}}/cancel"): any_pool("import"),
    # audited by the route once it knows the run's pool (a refused read was logged as one)
    ("GET", f"{_A}/perfusion/runs/{{run_id}}/result"): any_pool("read"),
    # ---------------------------------------------------------------- accounts (admin)
    ("GET", f"{_A}/users"): cap("users"),
    ("POST", f"{_A}/users"): cap("users"),
    ("GET", f"{_A}/users/{{username}}"): cap("users"),
    ("PATCH", f"{_A}/users/{{username}}"): cap("users"),
    ("PUT", f"{_A}/users/{{username}}/grants"): cap("users"),
    ("POST", f"{_A}/users/{{username}}/sessions/revoke"): cap("users"),
    ("POST", f"{_A}/users/{{username}}/unlock"): cap("users"),
    ("GET", f"{_A}/lockouts"): cap("users"),
    ("DELETE", f"{_A}/lockouts/address/{{address}}"): cap("users"),
    ("GET", f"{_A}/groups"): cap("users"),
    ("POST", f"{_A}/groups"): cap("users"),
    ("PUT", f"{_A}/groups/{{name}}/members"): cap("users"),
    ("PUT", f"{_A}/groups/{{name}}/grants"): cap("users"),
    ("DELETE", f"{_A}/groups/{{name}}"): cap("users"),
    ("GET", f"{_A}/quotas"): cap("users"),
    ("PUT", f"{_A}/quotas"): cap("users"),
    ("GET", f"{_A}/devices"): cap("devices"),
    ("POST", f"{_A}/devices/{{device_id}}/approve"): cap("devices"),
    ("POST", f"{_A}/devices/{{device_id}}/revoke"): cap("devices"),
    ("PATCH", f"{_A}/devices/{{device_id}}"): cap("devices"),
    ("POST", f"{_A}/retention/run"): cap("configure"),
    # ---------------------------------------------------------------- audit
    ("GET", f"{_A}/audit"): cap("audit"),
    ("GET", f"{_A}/audit/export"): cap("audit"),
    ("GET", f"{_A}/audit/verify"): cap("audit"),
    # ---------------------------------------------------------------- own data settings
    ("GET", f"{_A}/hidden"): USER,
    ("POST", f"{_A}/hidden"): USER,
    ("DELETE", f"{_A}/hidden"): USER,
    ("GET", f"{_A}/quota"): USER,
    # ---------------------------------------------------------------- share links
    ("POST", f"{_A}/shares"): pool("share"),
    ("GET", f"{_A}/shares"): USER,
    ("DELETE", f"{_A}/shares/{{share_id}}"): USER,
    ("GET", "/share/{token}"): PUBLIC,
    ("POST", "/share/{token}/pin"): PUBLIC,
    ("GET", "/share/{token}/content"): PUBLIC,
    ("GET", "/share/{token}/frames/{index}"): PUBLIC,
}

#: Routes served by FastAPI itself (documentation), open as FastAPI makes them.
FRAMEWORK_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def rule_for(method: str, path: str) -> Rule | None:
    return POLICY.get((method.upper(), path))


def role_allows(role: str, right: str) -> bool:
    return right in ROLE_RIGHTS.get(role, frozenset())


def management_refusal(
    actor: str, actor_role: str, target: str, target_role: str, new_role: str | None
) -> str:
    """Why ``actor`` may not create or change the account ``target`` ('' = allowed).

    The administrator role holds every right on every pool, so granting it is granting all
    patient data: only an administrator may grant or remove it, create an administrator,
    or change, disable, unlock or end the sessions of an administrator account. Clinic IT
    "runs the system but reads no patient data" and manages the other accounts (probe 7:
    clinic IT made itself administrator, then read every study). Nobody changes their own
    role, so nobody can promote themselves nor demote the last administrator by mistake.
    """
    if actor == target and new_role is not None and new_role != target_role:
        return "nobody may change their own role; ask another administrator"
    if actor_role == "administrator":
        return ""
    if new_role == "administrator":
        return "only an administrator may create administrators or grant that role"
    if target_role == "administrator":
        return "only an administrator may change an administrator account"
    return ""


def data_rights_refusal(actor_role: str, what: str) -> str:
    """Why ``actor_role`` may not make this change to rights on patient data ('' = allowed).

    Pool grants are patient data: clinic IT, which "reads no patient data", created a
    radiologist with ``{"*": ["read"]}`` and logged in as it, widened a radiologist's
    grants, or put accounts into granted groups (probe 21). Only an administrator gives or
    changes data rights: pool grants of users and groups, the members of a group that
    carries grants, and the role (the ceiling of the rights) of an account that holds
    grants. Clinic IT still creates accounts without data rights and resets passwords
    (a password set by another is one-time: ``UserSecurity.password_one_time``).
    """
    if actor_role == "administrator":
        return ""
    return f"only an administrator may give or change rights to patient data ({what})"


#: What an account whose password somebody else set may still do: set its own, or leave.
ONE_TIME_PASSWORD_ROUTES = {
    ("POST", f"{_A}/auth/password"),
    ("POST", f"{_A}/auth/logout"),
}
#: The 403 of every other route then; clients recognise it by this header value.
PASSWORD_CHANGE_CODE = "password-change-required"
PASSWORD_CHANGE_DETAIL = (
    "password change required: this password was set by someone else and is valid once; "
    f"set your own with POST {_A}/auth/password before anything else"
)


def parse_rights(text: str) -> set[str]:
    return {r.strip() for r in text.split(",") if r.strip()}


@dataclass(frozen=True)
class PoolAccess:
    """A caller's pool rights: ``everything`` for administrators, else per pool name."""

    everything: bool
    by_pool: dict[str, frozenset[str]]

    def allows(self, pool_name: str, right: str) -> bool:
        if self.everything:
            return True
        return right in self.by_pool.get(pool_name, frozenset())

    def pools_with(self, right: str, known: list[str]) -> list[str] | None:
        """Pools where ``right`` holds (None = all pools, no narrowing needed)."""
        if self.everything:
            return None
        return [p for p in known if self.allows(p, right)]

    def any(self, right: str) -> bool:
        return self.everything or any(right in r for r in self.by_pool.values())


def pool_access(db: DbSession, user_pk: int, role: str, known_pools: list[str]) -> PoolAccess:
    """Effective pool rights: role ceiling ∩ (user grants ∪ group grants), '*' expanded."""
    ceiling = ROLE_RIGHTS.get(role, frozenset())
    if role == "administrator":
        return PoolAccess(True, {})
    group_pks = list(db.scalars(select(GroupMember.group_pk).where(GroupMember.user_pk == user_pk)))
    stmt = select(PoolGrant).where(
        (PoolGrant.user_pk == user_pk)
        | (PoolGrant.group_pk.in_(group_pks) if group_pks else PoolGrant.id < 0)
    )
    by_pool: dict[str, set[str]] = {}
    for grant in db.scalars(stmt):
        targets = known_pools if grant.pool == "*" else [grant.pool]
        for name in targets:
            by_pool.setdefault(name, set()).update(parse_rights(grant.rights) & ceiling)
    return PoolAccess(False, {k: frozenset(v) for k, v in by_pool.items()})
