"""A subscriber's bounded queue: overflow coalesces per topic, then resets; duplicates are dropped."""

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from events.core.ids import parse_id
from events.core.messages import Message
from events.core.subscriber import Subscriber


def message(id: str, topic: str = "a") -> Message:
    return Message(id, topic, "invalidate", "null")


def test_messages_come_out_in_order() -> None:
    client = Subscriber(frozenset({"a"}), queue_size=10, is_stream=True)
    for i in range(1, 4):
        client.push(message(f"{i}-0"))
    assert [m.id for m in client.take()] == ["1-0", "2-0", "3-0"]
    assert client.take() == []


def test_overflow_keeps_the_latest_event_per_topic_in_order() -> None:
    client = Subscriber(frozenset({"a", "b"}), queue_size=3, is_stream=True)
    for i, topic in enumerate(["a", "b", "a", "a"], start=1):
        client.push(message(f"{i}-0", topic))
    assert [(m.id, m.topic) for m in client.take()] == [("2-0", "b"), ("4-0", "a")]


def test_overflow_beyond_one_per_topic_becomes_a_single_reset() -> None:
    client = Subscriber(frozenset({"a", "b", "c"}), queue_size=2, is_stream=True)
    for i, topic in enumerate(["a", "b", "c"], start=1):
        client.push(message(f"{i}-0", topic))
    [reset] = client.take()
    assert (reset.event, reset.id) == ("reset", "3-0")


def test_events_not_newer_than_the_last_given_are_dropped() -> None:
    client = Subscriber(frozenset({"a"}), queue_size=10, is_stream=True)
    client.last_key = parse_id("5-0")
    for id in ["4-0", "5-0", "6-0"]:
        client.push(message(id))
    assert [m.id for m in client.take()] == ["6-0"]


def test_a_reset_always_passes_even_with_a_lower_id() -> None:
    client = Subscriber(frozenset({"a"}), queue_size=10, is_stream=True)
    client.last_key = parse_id("5-0")
    client.push(Message.reset("0-0", "unknown-id"))
    client.push(message("1-0"))
    assert [(m.event, m.id) for m in client.take()] == [("reset", "0-0"), ("invalidate", "1-0")]


def resets_counted() -> float:
    return REGISTRY.get_sample_value("events_clients_reset_total") or 0.0


def test_a_reset_is_counted_once_when_the_client_is_given_it() -> None:
    client = Subscriber(frozenset({"a", "b", "c"}), queue_size=2, is_stream=True)
    before = resets_counted()
    # A reset from the hub, then an overflow that replaces it with another.
    client.push(Message.reset("1-0", "unknown-id"))
    client.push(message("2-0", "b"))
    client.push(message("3-0", "c"))
    assert resets_counted() == before  # queued, not given yet
    [reset] = client.take()
    assert (reset.event, reset.id) == ("reset", "3-0")
    assert resets_counted() == before + 1
    # A replayed reset is counted where it is handed over too.
    client.given_reset(Message.reset("4-0", "history-expired"))
    assert resets_counted() == before + 2


async def test_wait_returns_when_something_arrives() -> None:
    client = Subscriber(frozenset({"a"}), queue_size=10, is_stream=True)
    waiter = asyncio.create_task(client.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    client.heartbeat()
    await asyncio.wait_for(waiter, 1)
    assert client.heartbeat_due


async def test_a_direct_write_that_fails_ends_the_stream_instead_of_dropping_the_event() -> None:
    client = Subscriber(frozenset({"a"}), 10, is_stream=True)

    async def broken_send(event: Any) -> None:
        raise OSError("connection reset")

    client.send = broken_send
    waiting = asyncio.ensure_future(client.wait())
    await asyncio.sleep(0)  # parked: the next push writes directly
    client.push(message("1-1"))
    await asyncio.wait_for(waiting, 1)
    # Not silently gone: the stream ends (logged), and its client resumes from before this event.
    assert client.close_reason == "write-failed"
    assert client.delivered == 0


def test_the_queue_is_bounded_in_bytes_too() -> None:
    from events.core.subscriber import QUEUE_BYTES

    def large(id: str, topic: str) -> Message:
        return Message(id, topic, "invalidate", '"' + "x" * (QUEUE_BYTES // 2) + '"')

    client = Subscriber(frozenset({"a", "b", "c"}), queue_size=100, is_stream=True)
    client.push(large("1-0", "a"))
    assert [m.id for m in client.pending] == ["1-0"], "one message always fits"
    client.push(large("2-0", "a"))
    assert [m.id for m in client.pending] == ["2-0"], "over the bytes bound: the latest per topic"
    client.push(large("3-0", "b"))  # one per topic does not fit either: a reset
    [reset] = client.take()
    assert (reset.event, reset.id) == ("reset", "3-0")
    assert client.queued_bytes == 0
