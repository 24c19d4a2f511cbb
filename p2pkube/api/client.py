"""A small synchronous client for the agent's local API, used by the CLI.

Synchronous urllib rather than aiohttp: each CLI command makes one or two calls and exits, so an
event loop buys nothing, and not importing aiohttp keeps every command ~0.3 s faster.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping
from http.client import HTTPResponse
from pathlib import Path
from typing import IO, Any

from p2pkube.api import EMPTY_NAMESPACE, INFO_FILE, TOKEN_FILE
from p2pkube.api.warningheader import HEADER as WARNING_HEADER
from p2pkube.api.warningheader import parse_warning_header

WATCH_SECONDS = 1800
"""Lifetime the client asks for when the caller names none (the server's default, too)."""

__all__ = ["ApiClient", "ApiClientError", "ApiError"]


METRICS_PATH = "/apis/metrics.k8s.io/v1beta1"
"""Where the agent serves NodeMetrics and PodMetrics (its Kubernetes API, on the local API's
address as well)."""


class ApiClientError(Exception):
    """The agent could not be reached or asked (no agent, not answering, auth failure)."""


class ApiError(ApiClientError):
    """The agent answered with a Kubernetes ``Status`` failure (NotFound, Invalid, ...)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"Error from server ({reason}): {message}")
        self.code = code
        self.reason = reason
        self.message = message


def agent_info(data_dir: Path) -> tuple[dict[str, Any], str]:
    """What the agent owning ``data_dir`` published (api.json: its ``url``, ``node``, pid
    and ``kubeUrl``) and its token; ApiClientError saying what to do when there is none."""
    data_dir = Path(data_dir).expanduser()
    info_path = data_dir / INFO_FILE
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise ApiClientError(
            f"no agent is running with data dir {data_dir} (no {INFO_FILE}); "
            "start one with `p2pkube join`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ApiClientError(f"cannot read {info_path}: {exc}") from None
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url.startswith("http"):
        raise ApiClientError(f"{info_path} has no usable url")
    token_path = data_dir / TOKEN_FILE
    try:
        token = token_path.read_text().strip()
    except FileNotFoundError:
        raise ApiClientError(
            f"{info_path} exists but {token_path} does not; restart the agent"
        ) from None
    except OSError as exc:
        raise ApiClientError(f"cannot read {token_path}: {exc}") from None
    return info, token


class ApiClient:
    """Talks to one agent's local API with its bearer token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 40.0,
        on_warning: Callable[[str], None] = lambda text: None,
    ) -> None:
        # 40 s: longer than the server's own 30 s write timeout, so a slow write comes back
        # as the server's Timeout Status rather than as a client-side socket error.
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.on_warning = on_warning
        """Hears each warning the agent sent with an answer (``Warning`` headers)."""
        # No proxies: the agent is on loopback, and an http_proxy in the environment would
        # otherwise receive the bearer token.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path,
        *,
        timeout: float = 40.0,
        on_warning: Callable[[str], None] = lambda text: None,
    ) -> ApiClient:
        """Find the agent that owns ``data_dir`` through the api.json/api.token it wrote."""
        info, token = agent_info(data_dir)
        url = info["url"]
        return cls(url, token, timeout=timeout, on_warning=on_warning)

    # --- endpoints -----------------------------------------------------------------------

    def list_nodes(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        """All nodes this agent knows, with Ready as its failure detector sees it."""
        return self._items(
            self.request("GET", "/v1/nodes", query={"labelSelector": label_selector})
        )

    def get_node(self, name: str) -> dict[str, Any]:
        """One node; raises ApiError(404) if unknown."""
        return self.request("GET", f"/v1/nodes/{_q(name)}")

    def list_objects(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (None: all namespaces, "": cluster-scoped)."""
        query = {
            "namespace": EMPTY_NAMESPACE if namespace == "" else namespace,
            "labelSelector": label_selector,
        }
        return self._items(self.request("GET", f"/v1/objects/{_q(kind)}", query=query))

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """One object; raises ApiError(404) if absent."""
        return self.request("GET", _object_path(kind, namespace, name))

    def metrics(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Measured usage: the NodeMetrics (``resource`` ``nodes``) or PodMetrics (``pods``,
        in ``namespace``, None: all) that ``kubectl top`` reads, from the same documents
        (``metrics.k8s.io``); one object when ``name`` is given (ApiError(404) when it has no
        metrics). Nodes that did not answer come back as warnings (``on_warning``)."""
        path = METRICS_PATH + (f"/namespaces/{_q(namespace)}" if namespace else "")
        path += f"/{_q(resource)}"
        if name is not None:
            return [self.request("GET", f"{path}/{_q(name)}")]
        return self._items(self.request("GET", path, query={"labelSelector": label_selector}))

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace; returns the stored object once the agent made it durable."""
        return self.request("PUT", "/v1/objects", obj)

    def create_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create only; raises ApiError(409, AlreadyExists) if the object exists."""
        return self.request("POST", "/v1/objects", obj)

    def delete_object(self, kind: str, namespace: str, name: str, *, force: bool = False) -> None:
        """Delete; raises ApiError(404) if absent. A running Pod is only marked (its node stops
        and removes it) unless ``force``."""
        query = {"force": "true"} if force else None
        self.request("DELETE", _object_path(kind, namespace, name), query=query)

    def pod_logs(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        previous: bool = False,
        tail: int | None = None,
        since_time: str | None = None,
        timestamps: bool = False,
        follow: bool = False,
        follow_seconds: int = WATCH_SECONDS,
        on_omitted: Callable[[int], None] = lambda count: None,
    ) -> Iterator[str]:
        """A pod's log lines (without newlines), served by the node that ran it; with
        ``follow``, new lines as they come until the container ends. ``on_omitted`` hears
        how many older lines the agent left out of a reply too big to send whole."""
        query = {
            "container": container,
            "previous": "true" if previous else None,
            "tailLines": None if tail is None else str(tail),
            "sinceTime": since_time,
            "timestamps": "true" if timestamps else None,
            "follow": "true" if follow else None,
            "timeoutSeconds": str(follow_seconds) if follow else None,
        }
        timeout = follow_seconds + self.timeout if follow else self.timeout
        path = f"/v1/pods/{_q(namespace)}/{_q(name)}/log"
        with self._open("GET", path, None, query, timeout) as response:
            omitted = int(response.headers.get("X-P2pkube-Omitted-Lines") or 0)
            if omitted:
                on_omitted(omitted)
            for line in self._lines(response, "logs"):
                yield line.decode(errors="replace").rstrip("\n")

    def status(self) -> dict[str, Any]:
        """The agent's own view of itself and its neighbours."""
        return self.request("GET", "/v1/status")

    # --- blobs ---------------------------------------------------------------------------------

    def publish_blob(
        self, path: Path, on_progress: Callable[[int], None] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Upload a WebAssembly module (streamed from disk); (the Blob object, whether it was
        new). The agent computes the digest; publishing the same bytes again is a no-op.
        ``on_progress`` hears the bytes sent so far after each piece of the body went out."""
        path = Path(path)
        size = path.stat().st_size
        with path.open("rb") as fh:
            body: IO[bytes] | _Counted = fh if on_progress is None else _Counted(fh, on_progress)
            response = self._open(
                "POST",
                "/v1/blobs",
                None,
                {"source": path.name},
                self.timeout,
                data=(body, size, "application/wasm"),
            )
            with response:
                created = response.status == 201
                return self._decode(response), created

    def list_blobs(self) -> list[dict[str, Any]]:
        """Every published blob with its holders (``status.holders``)."""
        return self._items(self.request("GET", "/v1/blobs"))

    def get_blob(self, ref: str) -> dict[str, Any]:
        """One blob by digest or unique digest prefix; ApiError(404) if unknown."""
        return self.request("GET", f"/v1/blobs/{_q(ref)}")

    def pull_blob(self, ref: str) -> Iterator[dict[str, Any]]:
        """Make the agent fetch a blob; yields its ``PROGRESS`` events and the final
        ``COMPLETE`` one. An ``ERROR`` event is raised as ApiError, like an error answer."""
        response = self._open("POST", f"/v1/blobs/{_q(ref)}/pull", None, None, self.timeout)
        with response:
            for event in self._json_lines(response, "pull"):
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code", 500)),
                        str(status.get("reason", "Unknown")),
                        str(status.get("message", "")),
                    )
                yield event

    def watch(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        *,
        timeout_seconds: int = WATCH_SECONDS,
        on_open: Callable[[], None] | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Yield watch events (``{"type": ..., "object": ...}``) as the agent sends them.

        First every current object as ADDED, then changes, until the server ends the stream
        (after ``timeout_seconds``, or after an ERROR event when we read too slowly). Stop
        early by closing the generator (``break`` out of the loop). Each event is yielded as
        soon as its line arrives: the latency benchmark measures exactly that moment.
        ``on_open`` is called once the agent answered, before the first event: from then on
        every change is in the stream (``wait`` lists then, so nothing falls between).
        """
        query = {
            "namespace": EMPTY_NAMESPACE if namespace == "" else namespace,
            "labelSelector": label_selector,
            "timeoutSeconds": str(timeout_seconds),
        }
        # The stream may be silent for its whole life; the read timeout only has to catch an
        # agent that died without closing the connection.
        response = self._open(
            "GET", f"/v1/watch/{_q(kind)}", None, query, timeout_seconds + self.timeout
        )
        with response:
            if on_open is not None:
                on_open()
            yield from self._json_lines(response, "watch")

    # --- plumbing ----------------------------------------------------------------------------

    def _lines(self, response: HTTPResponse, what: str) -> Iterator[bytes]:
        """The lines of a streamed answer, each as soon as it arrives."""
        while True:
            try:
                line = response.readline()
            except TimeoutError:
                raise self._timeout() from None
            except OSError as exc:
                raise ApiClientError(f"{what} on {self.url} broke off: {exc}") from None
            if not line:
                return
            yield line

    def _json_lines(self, response: HTTPResponse, what: str) -> Iterator[dict[str, Any]]:
        """The JSON objects of a newline-delimited stream, each as soon as its line arrives."""
        for line in self._lines(response, what):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise ApiClientError(
                    f"agent at {self.url} sent an unreadable {what} event: {exc}"
                ) from None
            if not isinstance(event, dict):
                raise ApiClientError(f"agent at {self.url} sent a {what} event that is no object")
            yield event

    @staticmethod
    def _items(listing: Any) -> list[dict[str, Any]]:
        items = listing.get("items") if isinstance(listing, dict) else None
        if not isinstance(items, list):
            raise ApiClientError("the agent answered a list request without items")
        return items

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str | None] | None = None,
    ) -> Any:
        """One raw call (``client.request("GET", "/v1/status")``); the decoded JSON answer.

        Public for scripts and test harnesses that want an endpoint without a wrapper; raises
        ApiError for a Status answer and ApiClientError when the agent cannot be asked.
        """
        with self._open(method, path, body, query, self.timeout) as response:
            return self._decode(response)

    def _decode(self, response: HTTPResponse) -> Any:
        """The JSON body of an answer."""
        try:
            return json.loads(response.read() or b"null")
        except TimeoutError:
            raise self._timeout() from None
        except OSError as exc:
            raise ApiClientError(f"agent at {self.url} broke off its answer: {exc}") from None
        except ValueError as exc:
            raise ApiClientError(f"agent at {self.url} sent an unreadable answer: {exc}") from None

    def _open(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str | None] | None,
        timeout: float,
        *,
        data: tuple[IO[bytes] | _Counted, int, str] | None = None,
    ) -> HTTPResponse:
        """Send one request (a JSON ``body``, or raw ``data``: an open file, its length and
        content type, streamed); the open response, or the error the caller should see."""
        url = self.url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload: bytes | IO[bytes] | _Counted | None = None
        if data is not None:
            payload = data[0]
            headers["Content-Length"] = str(data[1])
            headers["Content-Type"] = data[2]
        elif body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=payload, method=method, headers=headers)
        try:
            response: HTTPResponse = self._opener.open(request, timeout=timeout)
            for value in response.headers.get_all(WARNING_HEADER) or []:
                self.on_warning(parse_warning_header(value))
            return response
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise ApiClientError(
                    f"agent at {self.url} is not answering (connection refused); "
                    "if it has stopped, start it again with `p2pkube join`"
                ) from None
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise self._timeout() from None
            raise ApiClientError(f"agent at {self.url} is not answering: {exc.reason}") from None
        except TimeoutError:
            raise self._timeout() from None

    def _timeout(self) -> ApiClientError:
        return ApiClientError(f"agent at {self.url} did not answer within {self.timeout:g}s")

    def _http_error(self, exc: urllib.error.HTTPError) -> ApiClientError:
        try:
            status = json.loads(exc.read())
        except (OSError, ValueError):
            status = None
        if exc.code == 401:
            return ApiClientError(
                f"the agent at {self.url} rejected our token (401 Unauthorized); "
                "api.token in the data dir does not match the running agent"
            )
        if isinstance(status, dict) and status.get("kind") == "Status":
            return ApiError(
                exc.code, str(status.get("reason", "Unknown")), str(status.get("message", ""))
            )
        return ApiError(exc.code, "Unknown", f"HTTP {exc.code} {exc.reason}")


class _Counted:
    """A file whose reads are counted: http.client sends a body with a ``read`` method piece
    by piece (8 KiB, its blocksize), each before it reads the next, so the count reported at
    a read is what went out before it."""

    def __init__(self, fh: IO[bytes], on_progress: Callable[[int], None]) -> None:
        self._fh = fh
        self._on_progress = on_progress
        self._sent = 0

    def read(self, size: int = -1) -> bytes:
        piece = self._fh.read(size)
        if self._sent:  # the previous piece has been written by now (all of them, at the end)
            self._on_progress(self._sent)
        self._sent += len(piece)
        return piece


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _object_path(kind: str, namespace: str, name: str) -> str:
    return f"/v1/objects/{_q(kind)}/{_q(namespace or EMPTY_NAMESPACE)}/{_q(name)}"
