"""API keys and tenants: every data set, job and model belongs to the tenant of its key."""

import hashlib
import re
import secrets
import time
from typing import Annotated, Any

import anyio
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


class KeyCache:
    """Tenants of keys seen lately, per API process: a request with a known key reads no
    database. Only valid keys are kept, for KTS_AUTH_CACHE_SECONDS, so a revoked key is
    refused by every process within that time (0 turns the cache off)."""

    MAX_KEYS = 10_000  # past it, the cache starts over (a flood of distinct valid keys)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tenants: dict[str, tuple[str, float]] = {}  # key hash: (tenant, valid until)

    def get(self, key_hash: str) -> str | None:
        found = self.tenants.get(key_hash)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, key_hash: str, tenant: str) -> None:
        if self.seconds <= 0:
            return
        if len(self.tenants) >= self.MAX_KEYS:
            self.tenants.clear()
        self.tenants[key_hash] = (tenant, time.monotonic() + self.seconds)


async def _tenant(request: Request) -> str:
    tenant = await _resolve_tenant(request)
    bind(tenant=tenant)  # every log line of the request names it
    return tenant


async def _resolve_tenant(request: Request) -> str:
    """The key's tenant: from this process's cache, else from the database in a thread."""
    state = request.app.state
    if not state.require_auth:
        return DEFAULT_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("Expected an API key: Authorization: Bearer <key>.")
    digest = hash_key(key.strip())
    cache = getattr(state, "key_cache", None)
    if cache is None:
        cache = state.key_cache = KeyCache(state.settings.auth_cache_seconds)
    tenant = cache.get(digest)
    if tenant is None:
        tenant = await anyio.to_thread.run_sync(_lookup, state.session_factory, digest)
        if tenant is None:
            raise Unauthorized("The API key is unknown or revoked.")
        cache.put(digest, tenant)
    return tenant


def _lookup(session_factory: Any, key_hash: str) -> str | None:
    with session_factory() as session:
        row = session.scalar(
            select(ApiKey.tenant).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    return row


TenantDep = Annotated[str, Depends(_tenant)]
