"""Bad input on both endpoints: a clear JSON 4xx, no Redis work, no slot held."""

from collections.abc import Callable

import httpx
import pytest
import redis

from .servers import UvicornServer

ENDPOINTS = ["/events/stream/", "/events/poll/"]

BAD_QUERIES = [
    ("", 400, "missing_topic"),
    ("?topic=", 400, "invalid_topic"),
    ("?topic=a%20b", 400, "invalid_topic"),
    ("?topic=a%0Ab", 400, "invalid_topic"),
    ("?topic=" + "x" * 129, 400, "invalid_topic"),
    ("?" + "&".join(f"topic=t{i}" for i in range(17)), 400, "too_many_topics"),
    ("?topic=a&topic=%2A", 400, "invalid_topic"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("query", "status", "code"), BAD_QUERIES)
def test_bad_topics_get_a_json_4xx_naming_the_problem(
    server: UvicornServer, endpoint: str, query: str, status: int, code: str
) -> None:
    response = httpx.get(server.url + endpoint + query, timeout=5)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("endpoint", "query", "headers"),
    [
        ("/events/stream/", "?topic=a", {"Last-Event-ID": "nope"}),
        ("/events/stream/", "?topic=a&last_event_id=1-2-3", {}),
        ("/events/stream/", "?topic=a&last_event_id=" + "9" * 60, {}),
        ("/events/stream/", "?topic=a&last_event_id=1-0&last_event_id=2-0", {}),
        ("/events/poll/", "?topic=a&since=abc", {}),
        ("/events/poll/", "?topic=a&since=-1", {}),
        ("/events/poll/", "?topic=a&since=1-0&since=2-0", {}),
    ],
)
def test_malformed_ids_get_a_400(server: UvicornServer, endpoint: str, query: str, headers: dict[str, str]) -> None:
    response = httpx.get(server.url + endpoint + query, headers=headers, timeout=5)
    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_id", "repeated_parameter"}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_get_get_a_json_405(server: UvicornServer, endpoint: str, method: str) -> None:
    response = httpx.request(method, server.url + endpoint + "?topic=a", timeout=5)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "method_not_allowed"


def test_bad_requests_leave_no_stream_or_subscription_behind(
    start_server: Callable[..., UvicornServer], make_topic: Callable[[], str], redis_client: redis.Redis
) -> None:
    # A server of its own, on a prefix of its own: whatever it holds afterwards
    # comes from these requests, not from other tests.
    prefix = f"bad-{make_topic()}"
    srv = start_server({"EVENTS_PREFIX": prefix})
    for endpoint in ENDPOINTS:
        for query, _, _ in BAD_QUERIES:
            assert httpx.get(srv.url + endpoint + query, timeout=5).status_code == 400
    health = httpx.get(srv.url + "/events/health/", timeout=5).json()
    assert (health["streams"], health["polls"]) == (0, 0)
    assert redis_client.pubsub_channels(f"{prefix}:*") == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_host_outside_allowed_hosts_is_a_400(server: UvicornServer, endpoint: str) -> None:
    response = httpx.get(server.url + endpoint + "?topic=a", headers={"Host": "evil.example"}, timeout=5)
    assert response.status_code == 400
