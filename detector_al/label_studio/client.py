"""Talking to Label Studio: the SDK client with connection checks and clear errors, project ids, local-files paths.

SDK calls go through label-studio-sdk's ``LabelStudio`` client (which handles personal access tokens itself);
raw HTTP requests go through :attr:`LabelStudioClient.http`, whose auth (:mod:`detector_al.label_studio.auth`) handles
both token kinds; task images are fetched by :func:`detector_al.io.fetch.task_image.fetch_image`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

from detector_al.label_studio.auth import HttpxLabelStudioAuth, LabelStudioAuth, label_studio_auth, refused_message
from detector_al.label_studio.errors import ImageFetchError, LabelStudioError

log = logging.getLogger(__name__)

__all__ = [
    "ImageFetchError",
    "LabelStudioClient",
    "LabelStudioError",
    "local_files_path",
    "project_id",
]


def local_files_path(url: str, root: Path | None) -> Path | None:
    """The file behind a ``/data/local-files/?d=<rel>`` URL when the local-files root is shared, else None."""
    if root is None or "/data/local-files/" not in url:
        return None
    rel = (parse_qs(urlparse(url).query).get("d") or [""])[-1]
    if not rel:
        return None
    path = (root / rel.lstrip("/")).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        return None
    return path


def project_id(project: str | int | None) -> int | None:
    """``"12.1700000000"`` (what Label Studio sends) -> 12."""
    if project is None or project == "":
        return None
    try:
        return int(str(project).split(".")[0])
    except ValueError:
        return None


class LabelStudioClient:
    """A thin wrapper over ``label_studio_sdk.LabelStudio`` whose errors say what to fix."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        import httpx
        from label_studio_sdk import LabelStudio
        from label_studio_sdk.core.api_error import ApiError

        if not url or not url.startswith(("http://", "https://")):
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not api_key:
            raise LabelStudioError("no Label Studio API key: set LABEL_STUDIO_API_KEY or pass --api-key")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.auth: LabelStudioAuth = label_studio_auth(self.url, api_key)
        self.http = requests.Session()
        self.http.auth = self.auth  # raw requests: Token <key>, or Bearer <access> from the PAT
        # the SDK's calls go through the same auth (a PAT refreshed early, one retry on 401)
        transport = httpx.Client(timeout=timeout, follow_redirects=True, auth=HttpxLabelStudioAuth(self.auth))
        try:
            self.ls = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, httpx_client=transport)
        except ApiError as exc:  # the SDK checks a PAT's expiry up front
            raise LabelStudioError(f"{refused_message(self.auth.kind)}: {exc.body}") from None

    @property
    def token_kind(self) -> str:
        """``"personal access token"`` or ``"legacy token"``."""
        return self.auth.kind

    def check(self) -> None:
        """Raise :class:`LabelStudioError` if Label Studio is unreachable or the key is refused (saying which
        kind of key it was and what to do)."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            self.ls.projects.list(page_size=1)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the API key ({exc.status_code}). {refused_message(self.auth.kind)}"
                ) from None
            raise LabelStudioError(f"Label Studio at {self.url} answered {exc.status_code}: {exc.body}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {exc}") from None
