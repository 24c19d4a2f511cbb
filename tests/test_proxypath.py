"""The proxy paths a tab's Service Worker hands its node (services/proxypath.py), and the
ServiceRequest the tab builds of one intercepted fetch (browser/proxy.py); pure Python, no tab."""

from __future__ import annotations

import pytest

from p2pkube.browser.proxy import service_request
from p2pkube.services.proxypath import is_proxy_path, parse_proxy_path
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, ServiceTarget


@pytest.mark.parametrize(
    ("path", "target", "path_info"),
    [
        ("/api/v1/namespaces/default/services/web/proxy/", ServiceTarget("default", "web"), "/"),
        ("/api/v1/namespaces/default/services/web/proxy", ServiceTarget("default", "web"), "/"),
        (
            "/api/v1/namespaces/ns1/services/http:web:http/proxy/a/b",
            ServiceTarget("ns1", "web", "http"),
            "/a/b",
        ),
        (
            "/api/v1/namespaces/default/pods/web-1:8080/proxy/x%20y",
            ServiceTarget("default", "web-1", "8080", pod=True),
            "/x y",
        ),
        # An encoded '/' is part of PATH_INFO, never a separator of the namespace or name.
        (
            "/api/v1/namespaces/default/services/web/proxy/a%2Fb",
            ServiceTarget("default", "web"),
            "/a/b",
        ),
    ],
)
def test_proxy_paths_parse_to_their_target_and_path_info(
    path: str, target: ServiceTarget, path_info: str
) -> None:
    assert is_proxy_path(path)
    assert parse_proxy_path(path) == (target, path_info)


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/v1/namespaces/default/services", 404, "no proxy path"),
        ("/api/v1/namespaces/default/deployments/web/proxy/", 404, "only services and pods"),
        ("/api/v1/namespaces/default/services/https:web:80/proxy/", 400, "plain http"),
        ("/api/v1/namespaces/default/services/a:b:c:d/proxy/", 400, "[http:]NAME[:PORT]"),
        ("/api/v1/namespaces/default/services/:80/proxy/", 400, "names no service"),
        ("/api/v1/namespaces/a%2Fb/services/web/proxy/", 400, "with a '/'"),
    ],
)
def test_what_is_no_proxy_path_is_refused_with_why(path: str, status: int, words: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse_proxy_path(path)
    assert caught.value.status == status and words in caught.value.message


def test_an_intercepted_fetch_becomes_the_request_a_native_front_door_would_build() -> None:
    settings = ServiceSettings()
    request = service_request(
        "post",
        "http://127.0.0.1:8090/api/v1/namespaces/default/services/web:80/proxy/hello?x=1&y=%20",
        [["content-type", "text/plain"], ["x-echo", "tab"]],
        b"12345",
        settings,
    )
    assert request.target == ServiceTarget("default", "web", "80")
    cgi = request.cgi
    assert (cgi.method, cgi.path, cgi.query) == ("POST", "/hello", "x=1&y=%20")
    assert (cgi.server_name, cgi.server_port, cgi.content_length) == ("127.0.0.1", 8090, 5)
    assert cgi.headers == (("content-type", "text/plain"), ("x-echo", "tab"))
    assert request.body == b"12345" and request.trace["door"] == "service worker"
    get = service_request(
        "GET", "https://node.example/api/v1/namespaces/d/pods/p/proxy", [], None, settings
    )
    assert (get.cgi.content_length, get.cgi.server_port, get.cgi.path) == (None, 443, "/")


def test_oversized_bodies_and_headers_get_413_and_431() -> None:
    settings = ServiceSettings(max_request_body_bytes=10, max_request_headers=2)
    url = "http://h/api/v1/namespaces/d/services/web/proxy/"
    with pytest.raises(HttpError) as body:
        service_request("POST", url, [], b"x" * 11, settings)
    assert body.value.status == 413
    with pytest.raises(HttpError) as many:
        service_request("GET", url, [["a", "1"], ["b", "2"], ["c", "3"]], None, settings)
    assert many.value.status == 431
    big = ServiceSettings(max_request_header_bytes=100)
    with pytest.raises(HttpError) as long:
        service_request("GET", url, [["a", "x" * 200]], None, big)
    assert long.value.status == 431
    with pytest.raises(HttpError) as bad:
        service_request("GET", url, [["only-a-name"]], None, settings)
    assert bad.value.status == 400
