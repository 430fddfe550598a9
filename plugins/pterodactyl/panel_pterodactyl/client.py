"""A small HTTP client for the Pterodactyl application and client APIs.

Every call goes through :meth:`PterodactylClient.request`, which maps what can go wrong to the
typed errors of ``panel.backends``:

* connection errors, timeouts, HTTP 429 and 5xx -> ``TransientBackendError``
* HTTP 401/403 -> ``PermanentBackendError`` (key rejected / not a root admin)
* HTTP 404 -> :class:`NotFound` (a ``PermanentBackendError``; callers catch it where "gone" is fine)
* HTTP 422 -> ``PermanentBackendError`` whose ``fields`` map each ``meta.source_field`` to its detail
* any other 4xx -> ``PermanentBackendError`` with the upstream detail

No raw ``requests`` exception leaves this module, and no key ever appears in a message or a log
record: keys are ``Secret`` values revealed only into the ``Authorization`` header.

Contract source: pterodactyl/panel v1.11 ``app/Exceptions/Handler.php`` (error envelope
``{"errors": [{"code", "status", "detail", "meta": {"source_field", "rule"}}]}``) and the
Fractal list envelope (``meta.pagination.links.next``).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from panel.backends import PermanentBackendError, Secret, TransientBackendError

log = logging.getLogger("panel_pterodactyl")

#: Largest page the application API accepts (``per_page`` 1..100).
MAX_PER_PAGE = 100


class NotFound(PermanentBackendError):
    """HTTP 404 from Pterodactyl (``NotFoundHttpException``): the object does not exist."""


class PterodactylClient:
    """Talks HTTP to one Pterodactyl panel.

    ``panel_url`` is the panel's base URL (``https://panel.example.com``); ``application_key``
    (``ptla_``) and ``client_key`` (``ptlc_``, optional) are ``Secret`` values. ``timeout`` is
    the read timeout in seconds (the connect timeout is at most 5 seconds).

    Idempotent GETs are retried by a urllib3 ``Retry`` adapter (connection errors, 429, 502, 503,
    504; ``retries`` extra tries, exponential backoff of ``backoff`` seconds). POST, PATCH and
    DELETE go through a second session that never retries, so a create is never sent twice by
    this client: the backend's own external-id lookup makes retries safe instead.
    """

    def __init__(self, panel_url: str, application_key: Secret, client_key: Secret | None = None,
                 *, timeout: float = 30.0, retries: int = 2, backoff: float = 0.25):
        self.panel_url = panel_url.rstrip("/")
        self._app_key = application_key if isinstance(application_key, Secret) else Secret(application_key)
        self._client_key = client_key if isinstance(client_key, Secret) or client_key is None else Secret(client_key)
        self.timeout = (min(5.0, float(timeout)), float(timeout))
        #: host[:port] of the panel, for messages (never a key).
        self.host = urlsplit(self.panel_url).netloc or self.panel_url
        retry = Retry(total=retries, connect=retries, read=retries, status=retries,
                      backoff_factor=backoff, status_forcelist=(429, 502, 503, 504),
                      allowed_methods=frozenset({"GET"}), raise_on_status=False,
                      respect_retry_after_header=True)
        self._get_session = self._session(HTTPAdapter(max_retries=retry))
        self._write_session = self._session(HTTPAdapter(max_retries=Retry(total=0, connect=0, read=0,
                                                                          redirect=0, status=0)))

    def __repr__(self) -> str:
        return f"PterodactylClient(panel_url={self.panel_url!r})"

    @staticmethod
    def _session(adapter: HTTPAdapter) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxy or .netrc surprises: the panel URL is explicit
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @property
    def has_client_key(self) -> bool:
        """True when a client API key (``ptlc_``) is configured."""
        return bool(self._client_key)

    def close(self) -> None:
        """Close both HTTP sessions."""
        self._get_session.close()
        self._write_session.close()

    # ------------------------------------------------------------------ requests
    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, api: str = "application") -> Any:
        """Send one request and return the decoded JSON body (``None`` for 204/empty).

        ``path`` is relative to ``/api/<api>`` (``api`` is ``"application"`` or ``"client"``), or an
        absolute URL on the same panel (a ``links.next``). Raises ``TransientBackendError``,
        ``PermanentBackendError`` or :class:`NotFound` as described in the module docstring.
        """
        if path.startswith("http://") or path.startswith("https://"):
            url = path
            shown = urlsplit(path).path
        else:
            url = f"{self.panel_url}/api/{api}/{path.lstrip('/')}"
            shown = f"/api/{api}/{path.lstrip('/')}"
        key = self._client_key if api == "client" else self._app_key
        if api == "client" and not key:
            raise PermanentBackendError("Pterodactyl client_api_key is not set")
        headers = {"Authorization": f"Bearer {key.reveal()}", "Accept": "application/json",
                   "Content-Type": "application/json"}
        session = self._get_session if method.upper() == "GET" else self._write_session
        try:
            response = session.request(method.upper(), url, params=params, json=json, headers=headers,
                                       timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.Timeout:
            raise TransientBackendError(
                f"Pterodactyl at {self.host} timed out on {method.upper()} {shown}") from None
        except requests.exceptions.RetryError:
            raise TransientBackendError(
                f"Pterodactyl at {self.host} kept failing on {method.upper()} {shown} after retries") from None
        except requests.exceptions.ConnectionError:
            raise TransientBackendError(
                f"Pterodactyl at {self.host} is unreachable ({method.upper()} {shown})") from None
        except requests.exceptions.RequestException as exc:
            raise TransientBackendError(
                f"Pterodactyl request {method.upper()} {shown} failed: {type(exc).__name__}") from None
        log.debug("pterodactyl %s %s -> %s", method.upper(), shown, response.status_code)
        return self._decode(response, method.upper(), shown, api)

    def _decode(self, response: requests.Response, method: str, shown: str, api: str) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            if status == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise TransientBackendError(
                    f"Pterodactyl answered {method} {shown} with {status} but not JSON") from None
        errors = _errors(response)
        detail = "; ".join(e["detail"] for e in errors if e["detail"]) or response.reason or ""
        where = f"{method} {shown}"
        if status == 429:
            retry_after = _float(response.headers.get("Retry-After"))
            raise TransientBackendError(f"Pterodactyl rate limit hit on {where} (429)", retry_after=retry_after)
        if status >= 500:
            raise TransientBackendError(f"Pterodactyl error {status} on {where}: {detail}".rstrip(": "))
        if 300 <= status < 400:
            raise PermanentBackendError(
                f"Pterodactyl redirected {where} ({status}): is panel_url the panel's base URL?")
        if status == 401:
            which = "client_api_key" if api == "client" else "application_api_key"
            raise PermanentBackendError(f"Pterodactyl rejected the {which} (401) on {where}")
        if status == 403:
            if api == "client":
                raise PermanentBackendError(
                    f"Pterodactyl refused the client_api_key (403) on {where}: it must be a ptlc_ "
                    f"account key of a user who can see the server (an application key is refused)")
            raise PermanentBackendError(
                f"Pterodactyl refused the application_api_key (403) on {where}: the key's user must "
                f"be a root admin and the key needs read/write on this resource")
        if status == 404:
            raise NotFound(f"Pterodactyl has no such object: {where} (404)")
        if status == 422:
            fields: dict[str, str] = {}
            for e in errors:
                name = e["source_field"] or "request"
                fields[name] = f"{fields[name]}; {e['detail']}" if name in fields else e["detail"]
            listing = "; ".join(f"{k}: {v}" for k, v in fields.items()) or detail
            raise PermanentBackendError(f"Pterodactyl rejected {where} (422): {listing}", fields=fields)
        raise PermanentBackendError(f"Pterodactyl answered {where} with {status}: {detail}".rstrip(": "))

    # ------------------------------------------------------------------ helpers
    def get(self, path: str, params: Mapping[str, Any] | None = None, *, api: str = "application") -> Any:
        """GET ``path`` (retried when idempotent failures happen); returns the JSON body."""
        return self.request("GET", path, params=params, api=api)

    def get_item(self, path: str, params: Mapping[str, Any] | None = None) -> dict:
        """GET an item envelope and return its ``attributes``."""
        body = self.get(path, params) or {}
        return dict(body.get("attributes") or {})

    def iter_list(self, path: str, params: Mapping[str, Any] | None = None, *,
                  per_page: int = MAX_PER_PAGE, max_pages: int = 1000) -> Iterator[dict]:
        """Yield the ``attributes`` of every item of a paginated list, page by page.

        Sends ``per_page`` (1..100) and asks for ``page=N+1`` while ``meta.pagination`` says there
        is a next page (``links.next`` set or ``current_page < total_pages``). The next page is
        requested with our own query (filters included) rather than by fetching ``links.next``
        verbatim, because Laravel's paginator links drop the query string. Stops after
        ``max_pages`` pages (a safety bound).
        """
        query = dict(params or {})
        query.setdefault("per_page", per_page)
        page = int(query.pop("page", 1))
        for _ in range(max_pages):
            body = self.get(path, {**query, "page": page}) or {}
            items = body.get("data") or []
            for item in items:
                yield dict(item.get("attributes") or {})
            pagination = (body.get("meta") or {}).get("pagination") or {}
            current = int(pagination.get("current_page") or page)
            total = int(pagination.get("total_pages") or current)
            has_next = bool((pagination.get("links") or {}).get("next")) or current < total
            if not has_next or not items:
                return
            page = current + 1


def _errors(response: requests.Response) -> list[dict]:
    try:
        body = response.json()
    except ValueError:
        return []
    out = []
    for e in (body.get("errors") or []) if isinstance(body, dict) else []:
        if not isinstance(e, dict):
            continue
        meta = e.get("meta") or {}
        out.append({"code": str(e.get("code") or ""), "detail": str(e.get("detail") or ""),
                    "source_field": str(meta.get("source_field") or "") if isinstance(meta, dict) else "",
                    "rule": str(meta.get("rule") or "") if isinstance(meta, dict) else ""})
    return out


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
