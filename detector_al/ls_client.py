"""Talking to Label Studio: connection checks with clear errors, task images, project model versions.

Everything goes through label-studio-sdk (``LabelStudio`` client, ``get_local_path`` for task images).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """Label Studio could not be used; the message says what to check."""


class ImageFetchError(RuntimeError):
    """A task's image could not be fetched (only that task fails)."""


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


def fetch_task_image(
    url: str,
    hostname: str | None,
    access_token: str | None,
    task_id: int | None,
    local_root: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """A local path to a task's image: straight from disk when possible, else downloaded (and cached) from Label Studio.

    Raises:
        ImageFetchError: with the URL and the reason (401/403 means the token is wrong, 404 a missing file).
    """
    direct = local_files_path(url, local_root)
    if direct is not None:
        return direct
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url and not url.startswith("/data/") and Path(url).is_file():  # a plain file path
        return Path(url)
    from label_studio_sdk._extensions.label_studio_tools.core.utils.io import get_local_path

    try:
        return Path(
            get_local_path(
                url,
                cache_dir=str(cache_dir) if cache_dir else None,
                hostname=hostname,
                access_token=access_token,
                task_id=task_id,
            )
        )
    except Exception as exc:  # requests / FileNotFoundError / ValueError from the SDK
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = {
            401: "unauthorized: check LABEL_STUDIO_API_KEY",
            403: "forbidden: check the token's access",
            404: "not found in Label Studio",
        }.get(status, str(exc) or type(exc).__name__)
        raise ImageFetchError(f"cannot fetch {url}: {hint}") from None


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
        from label_studio_sdk import LabelStudio

        if not url or not url.startswith(("http://", "https://")):
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not api_key:
            raise LabelStudioError("no Label Studio API key: set LABEL_STUDIO_API_KEY or pass --api-key")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.ls = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    def check(self) -> None:
        """Raise :class:`LabelStudioError` if Label Studio is unreachable or the key is refused."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            self.ls.projects.list(page_size=1)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelStudioError(f"Label Studio at {self.url} refused the API key ({exc.status_code})") from None
            raise LabelStudioError(f"Label Studio at {self.url} answered {exc.status_code}: {exc.body}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {exc}") from None

    def set_model_version(self, project: int, version: str) -> bool:
        """Set the project's ``model_version`` (so prediction scores show and sort); True if it changed."""
        current = self.ls.projects.get(id=project).model_version
        if current == version:
            return False
        self.ls.projects.update(id=project, model_version=version)
        log.info("project %s: model_version %r -> %r", project, current, version)
        return True
