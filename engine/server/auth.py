"""Who sends a request, when the server has API keys (``EngineConfig.api_keys_file``).

:class:`RequireApiKey` (ASGI middleware) lets a ``/v1`` request through only with
``Authorization: Bearer <key>`` of a key in force (401 otherwise, before the body is read) and
puts the key's :class:`~asymcache.engine.server.api_keys.Principal` on the request
(``request.state.principal``; ``request.state.tenant`` is its tenant's name). Routes then ask:
:func:`cache_salt` (the salt a generation runs with: the key's own; another one in the body is
403) and :func:`require_admin` (the dependency of every admin route: 403 without an admin key).
Without keys every request passes, as before keys existed. ``/health`` and ``/metrics`` are
outside ``/v1`` and stay open.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from asymcache.engine.server import responses as R
from asymcache.engine.server.api_keys import ApiKeys, Principal

PROTECTED_PREFIX = "/v1"


class Refused(Exception):
    """A request its key does not allow: 401 (no key in force) or 403 (not this key)."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code

    def response(self) -> JSONResponse:
        kind = "authentication_error" if self.status == 401 else "permission_error"
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(R.error_body(self.message, kind, code=self.code), self.status,
                            headers=headers)


class RequireApiKey:
    """ASGI middleware: every ``/v1`` request needs a key in force in ``keys``."""

    def __init__(self, app: Any, keys: ApiKeys) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PROTECTED_PREFIX
                                        or path.startswith(PROTECTED_PREFIX + "/")):
            try:
                principal = authenticate(self.keys, _authorization(scope))
            except Refused as refused:
                await refused.response()(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            state["principal"], state["tenant"] = principal, principal.tenant
        await self.app(scope, receive, send)


def _authorization(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def authenticate(keys: ApiKeys, header: str | None) -> Principal:
    """The principal of an ``Authorization`` header's key; raises :class:`Refused` (401)."""
    if header is None:
        raise Refused("no API key: send it as 'Authorization: Bearer <key>'", 401,
                      "missing_api_key")
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refused("the Authorization header must be 'Bearer <key>'", 401, "invalid_api_key")
    principal = keys.lookup(key.strip())
    if principal is None:
        raise Refused("unknown API key (not in the server's api_keys_file, or removed from it)",
                      401, "invalid_api_key")
    return principal


def principal_of(request: Request) -> Principal | None:
    """The request's principal; None when the server has no API keys."""
    return getattr(request.state, "principal", None)


def cache_salt(request: Request, body: Any) -> str:
    """The ``cache_salt`` a generation request runs with: its key's tenant's salt (a different
    one in the body is refused, never used), or the body's when the server has no keys."""
    principal = principal_of(request)
    if principal is None:
        return body.cache_salt
    if principal.tenant is None or principal.cache_salt is None:
        raise Refused("this API key is an admin key without a tenant; generate with a tenant's "
                      "key", 403, "tenant_key_required")
    if "cache_salt" in body.model_fields_set and body.cache_salt != principal.cache_salt:
        raise Refused(f"cache_salt is bound to the API key (tenant {principal.tenant!r}) and "
                      f"the body's differs: leave cache_salt out, or send the key's own", 403,
                      "cache_salt_not_allowed")
    return principal.cache_salt


def require_admin(request: Request) -> None:
    """Dependency of admin routes: 403 unless the request's key is an admin key."""
    principal = principal_of(request)
    if principal is None or not principal.admin:
        raise Refused("this operation needs an admin API key", 403, "admin_key_required")


def require_admin_or_local(request: Request) -> None:
    """Dependency of operations a host's own tooling sends (drain on a preemption notice):
    with API keys, an admin key (as :func:`require_admin`); without, only from this host
    (a loopback client address), else 403."""
    if getattr(request.app.state, "keys", None) is not None:
        require_admin(request)
        return
    host = request.client.host if request.client is not None else ""
    if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
        raise Refused("without API keys this operation is allowed from this host only; "
                      "configure api_keys_file and use an admin key", 403, "admin_key_required")
