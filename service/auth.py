"""API keys and tenants: every data set, job and model belongs to the tenant of its key."""

import hashlib
import re
import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ApiError
from service.logs.context import bind
from service.rows import DEFAULT_TENANT, ApiKey

KEY_PREFIX = "kts_"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class TenantInvalid(ValueError):
    pass


def create_key(session: Session, tenant: str) -> str:
    """Store a new key for `tenant` (hashed) and return it: it is shown only this once."""
    if not TENANT.match(tenant):
        raise TenantInvalid(
            "Expected a tenant name of 1 to 64 lower-case letters, digits, _ and -, starting "
            f"with a letter or digit. Received: {tenant[:100]!r}"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant=tenant, key_hash=hash_key(key), prefix=key[:12]))
    session.flush()
    return key


def tenant_of(session: Session, key: str) -> str | None:
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    return row.tenant if row else None


def _tenant(request: Request) -> str:
    tenant = _resolve_tenant(request)
    bind(tenant=tenant)  # every log line of the request names it
    return tenant


def _resolve_tenant(request: Request) -> str:
    if not request.app.state.require_auth:
        return DEFAULT_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("Expected an API key: Authorization: Bearer <key>.")
    with request.app.state.session_factory() as session:
        tenant = tenant_of(session, key.strip())
    if tenant is None:
        raise Unauthorized("The API key is unknown or revoked.")
    return tenant


TenantDep = Annotated[str, Depends(_tenant)]
