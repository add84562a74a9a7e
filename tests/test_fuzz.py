"""Property-based: arbitrary query strings and headers never give a 500 or a hung request."""

from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import SERVER_ENV
from .servers import UvicornServer, start_uvicorn

NAMES = st.sampled_from(["topic", "since", "last_event_id", "token", "x", "topic[]", ""])
VALUES = st.one_of(
    st.text(max_size=50),
    st.from_regex(r"[0-9]{1,22}-[0-9]{1,22}", fullmatch=True),
    st.from_regex(r"[a-z0-9_.:@-]{1,20}", fullmatch=True),
    st.text(alphabet=st.characters(codec="ascii"), max_size=300),
)
QUERIES = st.one_of(
    st.lists(st.tuples(NAMES, VALUES), max_size=20).map(urlencode),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=&%-_.:~", max_size=200),
)
# Header values an HTTP client can send: visible latin-1, no line breaks.
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=100
).map(str.strip)
HEADERS = st.dictionaries(
    st.sampled_from(["Last-Event-ID", "Accept", "X-Forwarded-For", "Cookie", "Origin"]), HEADER_VALUES
)


@pytest.fixture(scope="module")
def fuzz_server(redis_url: str, events_prefix: str) -> Iterator[UvicornServer]:
    env = {**SERVER_ENV, "REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, "EVENTS_LONGPOLL_TIMEOUT": "0.3"}
    with start_uvicorn(env) as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.mark.parametrize("endpoint", ["/events/stream/", "/events/poll/"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=QUERIES, headers=HEADERS)
def test_any_query_and_headers_get_a_prompt_answer_below_500(
    fuzz_server: UvicornServer, http: httpx.Client, endpoint: str, query: str, headers: dict[str, str]
) -> None:
    url = f"{fuzz_server.url}{endpoint}?{query}"
    # Reading only the head: a valid stream request would stream forever.
    raw_headers = {name.encode("latin-1"): value.encode("latin-1") for name, value in headers.items()}
    with http.stream("GET", url, headers=raw_headers) as response:
        assert response.status_code < 500, (url, headers, response.read())
        if response.status_code >= 400:
            body = response.read()
            assert response.headers["content-type"] == "application/json", body
        elif endpoint == "/events/stream/":
            assert response.headers["content-type"] == "text/event-stream"
        else:
            response.read()  # the poll answers within its 0.3 s timeout
