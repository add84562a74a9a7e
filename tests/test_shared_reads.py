"""Identical reads asked for at the same moment share one call; later ones do not."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis

from events import publish
from events.backends.shared_reads import SharedReads

from .servers import RedisServer, UvicornServer, command_calls


async def test_identical_asks_before_the_read_starts_share_one_call() -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    async def call() -> int:
        calls.append(1)
        number = len(calls)
        await gate.wait()
        return number

    reads: SharedReads[int] = SharedReads()
    askers = [asyncio.ensure_future(reads.read("k", call)) for _ in range(50)]
    await asyncio.sleep(0)  # the read starts: it takes no more askers
    late = asyncio.ensure_future(reads.read("k", call))
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*askers) == [1] * 50
    assert await late == 2
    assert len(calls) == 2


async def test_different_keys_do_not_share() -> None:
    reads: SharedReads[str] = SharedReads()

    async def echo(value: str) -> str:
        return value

    a, b = await asyncio.gather(reads.read("a", lambda: echo("a")), reads.read("b", lambda: echo("b")))
    assert (a, b) == ("a", "b")


async def test_one_cancelled_asker_does_not_cancel_the_others() -> None:
    gate = asyncio.Event()

    async def call() -> str:
        await gate.wait()
        return "done"

    reads: SharedReads[str] = SharedReads()
    first = asyncio.ensure_future(reads.read("k", call))
    second = asyncio.ensure_future(reads.read("k", call))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_error_reaches_every_asker() -> None:
    async def call() -> str:
        raise redis.ConnectionError("down")

    reads: SharedReads[str] = SharedReads()
    results = await asyncio.gather(*(reads.read("k", call) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, redis.ConnectionError) for r in results)


def evalsha_calls(redis_client: redis.Redis) -> int:
    calls = command_calls(redis_client)
    return calls.get("evalsha", 0) + calls.get("eval", 0)


async def test_a_burst_of_identical_polls_costs_far_fewer_history_reads(
    private_server: tuple[RedisServer, UvicornServer], topic: str
) -> None:
    """200 polls ask at once with the same ``since``: all answered, with a few history reads, not 200."""
    redis_server, server = private_server
    redis_client = redis_server.client()
    since = await asyncio.to_thread(publish, topic, data="before")
    polls = 200
    limits = httpx.Limits(max_connections=polls)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        before = evalsha_calls(redis_client)
        waiting = [
            asyncio.ensure_future(client.get("/events/poll/", params={"topic": topic, "since": since}))
            for _ in range(polls)
        ]

        async def all_waiting() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as probe:
                while (await probe.get("/events/health/")).json()["polls"] < polls:
                    await asyncio.sleep(0.05)

        await asyncio.wait_for(all_waiting(), 30)
        reads = evalsha_calls(redis_client) - before
        event_id = await asyncio.to_thread(publish, topic, data="after")
        answers = await asyncio.gather(*waiting)
    assert all(a.status_code == 200 for a in answers)
    assert all([e["id"] for e in a.json()["events"]] == [event_id] for a in answers)
    assert reads < polls / 4, f"{reads} history reads for {polls} identical polls"
