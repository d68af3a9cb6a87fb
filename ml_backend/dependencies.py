"""Request dependencies: the backend object and HTTP basic auth."""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from ml_backend.state import Backend

_basic = HTTPBasic(auto_error=False)


async def get_backend(request: Request) -> Backend:
    return request.app.state.backend


async def authenticated(
    credentials: HTTPBasicCredentials | None = Depends(_basic), backend: Backend = Depends(get_backend)
) -> bool:
    """Whether the request may see everything: basic auth is off, or it carries BASIC_AUTH_USER / BASIC_AUTH_PASS."""
    user, password = backend.settings.basic_auth_user, backend.settings.basic_auth_pass
    if not user and not password:
        return True
    return (
        credentials is not None
        and secrets.compare_digest(credentials.username.encode(), (user or "").encode())
        and secrets.compare_digest(credentials.password.encode(), (password or "").encode())
    )


async def require_auth(ok: bool = Depends(authenticated)) -> None:
    """With BASIC_AUTH_USER / BASIC_AUTH_PASS set, every endpoint but /health needs them (Label Studio's
    "Basic auth" option); a missing or wrong pair gets 401."""
    if not ok:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong or missing basic-auth credentials",
            headers={"WWW-Authenticate": "Basic"},
        )
