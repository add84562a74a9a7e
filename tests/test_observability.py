"""Health and Prometheus metrics reflect what happened; limits give retry-able answers."""

import asyncio
from collections.abc import Callable

import httpx

from events import publish

from .servers import UvicornServer, metric, wait_for
from .sse import open_stream
from .waits import opened


async def test_health_and_metrics_follow_streams_and_events(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server()
    health = httpx.get(f"{srv.url}/events/health/", timeout=5)
    assert health.status_code == 200
    assert health.json()["redis"] is True
    delivered_before = metric(srv, "events_delivered_total")
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as one:
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as two:
            # Attached and subscribed (the gauge alone moves before Redis confirms).
            await opened(one)
            await opened(two)
            assert metric(srv, "events_streams_open") == 2
            assert metric(srv, "events_topics_subscribed") >= 1
            assert httpx.get(f"{srv.url}/events/health/", timeout=5).json()["hub"] == "connected"
            await asyncio.to_thread(publish, topic)
            await one.next_event()
            await two.next_event()
            assert metric(srv, "events_delivered_total") == delivered_before + 2
            assert metric(srv, "events_hub_connected") == 1
    await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 0, 10, "streams closed")


async def test_metrics_are_a_404_until_a_setting_enables_them(start_server: Callable[..., UvicornServer]) -> None:
    off = start_server({"EVENTS_METRICS": "0"})
    assert httpx.get(f"{off.url}/events/metrics/", timeout=5).status_code == 404
    on = start_server({"EVENTS_METRICS": "1"})
    response = httpx.get(f"{on.url}/events/metrics/", timeout=5)
    assert response.status_code == 200
    assert "events_streams_open" in response.text


async def test_health_names_no_topic(start_server: Callable[..., UvicornServer], topic: str) -> None:
    srv = start_server()
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_topics_subscribed") >= 1, 10, "a subscription")
        health = httpx.get(f"{srv.url}/events/health/", timeout=5)
    assert health.status_code == 200
    assert topic not in health.text


async def test_over_the_stream_limit_a_stream_gets_a_retryable_answer(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"EVENTS_MAX_STREAMS": "2"})
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as one:
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as two:
            await one.next_frame()
            await two.next_frame()
            await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 2, 10, "2 streams")
            async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as third:
                assert third.response.status_code == 200
                frames = await third.until_end()
            assert str(frames[0].get("retry")).isdigit()
            assert any("EVENTS['MAX_STREAMS']" in c for f in frames for c in f.comments)
            assert metric(srv, 'events_streams_rejected_total{reason="limit"}') == 1


async def test_over_the_poll_limit_a_poll_gets_a_503_counted_as_a_rejected_poll(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"EVENTS_MAX_POLLS": "1", "EVENTS_LONGPOLL_TIMEOUT": "5"})
    async with httpx.AsyncClient(timeout=10) as client:
        waiting = asyncio.create_task(client.get(f"{srv.url}/events/poll/?topic={topic}"))
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_polls_waiting") == 1, 10, "1 poll waiting")
        refused = await client.get(f"{srv.url}/events/poll/?topic={topic}")
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "2")
        assert metric(srv, 'events_polls_rejected_total{reason="limit"}') == 1
        assert 'events_streams_rejected_total{reason="limit"}' not in httpx.get(f"{srv.url}/events/metrics/").text
        await asyncio.to_thread(publish, topic)
        assert (await waiting).status_code == 200


async def test_every_reset_a_stream_or_poll_gets_is_counted_once(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server()
    before = metric(srv, "events_clients_reset_total")
    unknown = "99999999999999-0"
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}", headers={"Last-Event-ID": unknown}) as stream:
        assert (await stream.next_event()).event == "reset"
    assert metric(srv, "events_clients_reset_total") == before + 1
    answer = httpx.get(f"{srv.url}/events/poll/?topic={topic}&since={unknown}", timeout=10).json()
    assert [event["event"] for event in answer["events"]] == ["reset"]
    assert metric(srv, "events_clients_reset_total") == before + 2
