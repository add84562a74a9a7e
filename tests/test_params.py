"""Reading a request's parameters: the query is read as ``request.GET`` would read it, without making it."""

import contextlib
import io

import pytest
from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, QueryDict
from django.test import RequestFactory
from pytest_django.fixtures import Settings

from events.http import params


def asgi_request(query: bytes) -> ASGIRequest:
    scope = {"type": "http", "method": "GET", "path": "/events/poll/", "query_string": query, "headers": []}
    return ASGIRequest(scope, io.BytesIO())


QUERIES = [
    b"",
    b"topic=a",
    b"topic=a&topic=b&since=1-0",
    b"topic=a%2Cb&topic=%C3%A9t%C3%A9&token=x%2By+z",
    b"topic=&since=&topic",
    b"topic=a&&topic=b&=c",
    b"topic=%FF%FE&since=%zz",
    b"topic=a;b",
    "topic=\u00e9t\u00e9".encode(),
    b"topic=a+b&since=%2B1&token=a=b=c&=&&&x",
    b"topic=%",
    b"&",
]


@pytest.mark.parametrize("query", QUERIES)
def test_values_are_those_of_request_get(query: bytes) -> None:
    request = asgi_request(query)
    expected = QueryDict(query.decode())
    for name in ("topic", "since", "token", "", "missing"):
        assert params._values(request, name) == expected.getlist(name)
    assert "GET" not in request.__dict__, "request.GET was made"


def test_a_request_get_already_made_is_used_as_it_is() -> None:
    request = asgi_request(b"topic=a")
    request.GET = QueryDict("topic=replaced")  # e.g. by a middleware
    assert params._values(request, "topic") == ["replaced"]


def test_a_wsgi_request_is_read_through_request_get() -> None:
    request = RequestFactory().get("/events/poll/", {"topic": ["a", "b"]})
    assert params._values(request, "topic") == ["a", "b"]


@pytest.mark.parametrize(("fields", "refused"), [(1000, False), (1001, True)])
def test_too_many_fields_is_refused_as_django_refuses_it(fields: int, refused: bool) -> None:
    query = "&".join(f"f{i}=1" for i in range(fields))  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000
    with pytest.raises(TooManyFieldsSent) if refused else contextlib.nullcontext():
        QueryDict(query)
    with pytest.raises(TooManyFieldsSent) if refused else contextlib.nullcontext():
        params._values(asgi_request(query.encode()), "topic")


def get_host_verdict(request: HttpRequest) -> bool:
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def check_host_verdict(request: HttpRequest) -> bool:
    try:
        params.check_host(request)
    except DisallowedHost:
        return False
    return True


HOSTS = [
    "example.com",
    "EXAMPLE.com:8000",
    "example.com.",
    "sub.example.com",
    "evil.com",
    "",
    "[::1]:80",
    "a b",
    "localhost",
]
ALLOWED = [[], ["example.com"], [".example.com"], ["*"], ["localhost", "[::1]"]]


@pytest.mark.parametrize("allowed", ALLOWED)
@pytest.mark.parametrize("debug", [False, True])
def test_check_host_gives_get_hosts_verdict(settings: Settings, allowed: list[str], debug: bool) -> None:
    settings.ALLOWED_HOSTS = allowed
    settings.DEBUG = debug
    for host in HOSTS:
        for forwarded_too in (False, True):
            request = RequestFactory().get("/events/poll/", HTTP_HOST=host)
            if forwarded_too:
                request.META["HTTP_X_FORWARDED_HOST"] = "example.com"
            assert check_host_verdict(request) == get_host_verdict(request), (host, forwarded_too)
        for forwarded in (False, True):
            settings.USE_X_FORWARDED_HOST = forwarded
            request = RequestFactory().get("/events/poll/", HTTP_X_FORWARDED_HOST=host)
            assert check_host_verdict(request) == get_host_verdict(request), (host, forwarded)
    request = RequestFactory().get("/events/poll/")  # no Host header: SERVER_NAME
    assert check_host_verdict(request) == get_host_verdict(request)
