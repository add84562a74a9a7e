"""Sentinel failover: SIGKILL the primary under open streams and long-polls; nobody is lost.

One primary, one replica, three sentinels (``redis-server --sentinel``), all
on loopback; two uvicorn workers with ``REDIS_URL=redis+sentinel://…``. The
scenario, in order:

1. streams (two per worker) receive an event that reached the replica;
2. replication is cut off (the replica's account is disabled on the primary)
   and one more event is published: the primary accepts it, every stream
   gets it live, but the replica never will: it is *lost* by the failover;
3. long-polls wait on both workers, resuming from that lost id;
4. the primary is SIGKILLed. While no primary is reachable: publish() raises
   PublishError quickly, a new stream gets the retry-able answer, a long-poll
   gets 503 with Retry-After, health says unavailable;
5. the sentinels promote the replica; the workers find it by asking them.
   Every open stream kept its heartbeats, got a ``reset`` (its last id is
   gone), and then every event published after the failover exactly once;
   the waiting long-polls answer ``reset``; resuming from the lost id gives a
   ``reset``. The time from SIGKILL to events flowing is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from events import PublishError, current_id, publish
from events.backends.connection import close_sync_clients, history_key

from .redis_ha import DATA_PASSWORD, DOWN_AFTER_MS, REPL_USER, SENTINEL_PASSWORD, SentinelSetup, start_sentinel_setup
from .servers import ROOT, UvicornServer, wait_for
from .sse import Frame, SSEStream, open_stream

# docs/howto/redis.md, "High availability": with the sentinels answering and the dead
# primary refusing connections, publish() fails in milliseconds; the bound
# leaves room for a loaded machine.
PUBLISH_FAILS_WITHIN = 3.0
# SIGKILL to events flowing: the sentinels' detection and failover, plus at
# most a few seconds of ours (reconnect backoff is capped at 2 s + jitter).
FLOWING_WITHIN = DOWN_AFTER_MS / 1000 + 12.0


@pytest.fixture
def ha() -> Iterator[SentinelSetup]:
    setup = start_sentinel_setup()
    yield setup
    setup.stop()


@dataclass
class Recorder:
    """Reads one open stream in the background, keeping every frame with its arrival time."""

    name: str
    stream: SSEStream
    frames: list[tuple[float, Frame]] = field(default_factory=list)
    ended: bool = False

    async def run(self) -> None:
        while (frame := await self.stream.next_frame(timeout=3600)) is not None:
            self.frames.append((time.monotonic(), frame))
        self.ended = True

    def event_ids(self) -> list[str]:
        """Ids of the events received (a reset carries the id to resume from, not an event)."""
        return [
            frame.id for _, frame in self.frames if frame.is_event and frame.event != "reset" and frame.id is not None
        ]

    def has(self, event_id: str) -> bool:
        return event_id in self.event_ids()

    def events_after(self, moment: float) -> list[Frame]:
        return [frame for at, frame in self.frames if at >= moment and frame.is_event]

    def heartbeats_between(self, start: float, end: float) -> int:
        return sum("heartbeat" in frame.comments for at, frame in self.frames if start <= at <= end)


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    await asyncio.to_thread(wait_for, condition, timeout, what, 0.02)


def health(worker: UvicornServer) -> httpx.Response:
    return httpx.get(f"{worker.url}/events/health/", timeout=10)


async def try_publish(topic: str, data: object) -> str | None:
    try:
        return await asyncio.to_thread(publish, topic, data)
    except PublishError:
        return None


async def test_sentinel_failover_loses_no_one(
    ha: SentinelSetup, start_server: Callable[..., UvicornServer], topic: str
) -> None:
    env = {"REDIS_URL": ha.url, "EVENTS_LONGPOLL_TIMEOUT": "40"}
    workers = [start_server(env), start_server(env)]
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": ha.url}):
        try:
            await _failover_scenario(ha, workers, topic)
        finally:
            close_sync_clients()


async def _failover_scenario(ha: SentinelSetup, workers: list[UvicornServer], topic: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # 1. Open streams, two per worker, resuming from now (nothing falls in between).
        start = current_id()
        recorders: list[Recorder] = []
        for index, worker in enumerate([*workers, *workers]):
            stream = await stack.enter_async_context(
                open_stream(f"{worker.url}/events/stream/?topic={topic}", headers={"Last-Event-ID": start})
            )
            recorders.append(Recorder(f"worker{index % 2}-stream{index // 2}", stream))
        tasks = [asyncio.create_task(recorder.run()) for recorder in recorders]
        stack.push_async_callback(_cancel, tasks)

        replicated = await asyncio.to_thread(publish, topic, data="replicated")
        await until(lambda: all(r.has(replicated) for r in recorders), 10, "every stream to get the first event")
        with ha.primary.client() as primary:
            assert primary.execute_command("WAIT", 1, 5000) == 1, "the replica did not acknowledge the first event"

            # 2. Cut replication off, then publish an event only the primary will ever have.
            primary.acl_setuser(REPL_USER, enabled=False)
            primary.client_kill_filter(_type="replica")
        with ha.replica.client() as replica:
            await until(
                lambda: replica.info("replication")["master_link_status"] == "down", 10, "replication to be cut"
            )
            lost = await asyncio.to_thread(publish, topic, data="lost")
            await until(lambda: all(r.has(lost) for r in recorders), 10, "every stream to get the lost event live")
            assert replica.xrange(history_key(), lost, lost) == [], "the 'lost' event reached the replica"

        # 3. Long-polls resuming from the lost id wait on both workers.
        async with httpx.AsyncClient(timeout=60) as http:
            waiting = [
                asyncio.create_task(http.get(f"{worker.url}/events/poll/?topic={topic}&since={lost}"))
                for worker in workers
            ]
            await until(lambda: all(health(w).json()["polls"] == 1 for w in workers), 10, "the long-polls to wait")

            # 4. Kill the primary. No primary is reachable until the sentinels promote the replica.
            old_primary = ha.primary.port
            killed_at = time.monotonic()
            ha.primary.kill()
            await _check_outage(ha, workers, topic, old_primary)

            # 5. Events flow again once the hub found the new primary through the sentinels.
            promoted_at: float | None = None
            probes: list[str] = []
            while not all(any(r.has(probe) for probe in probes) for r in recorders):
                assert time.monotonic() - killed_at < FLOWING_WITHIN, (
                    f"events did not flow again within {FLOWING_WITHIN} s of the SIGKILL; "
                    f"sentinels say the primary is on port {ha.primary_port()}\n{workers[0].log()[-3000:]}"
                )
                if promoted_at is None and ha.primary_port() == ha.replica.port:
                    promoted_at = time.monotonic()
                probe = await try_publish(topic, "probe")
                if probe is not None:
                    probes.append(probe)
                # The pace of a publisher retrying, not a synchronisation: the loop condition is the check.
                await asyncio.sleep(0.1)
            flowing_at = time.monotonic()
            print(
                f"\nSentinel failover (down-after-milliseconds {DOWN_AFTER_MS}): SIGKILL -> replica promoted "
                f"{(promoted_at or flowing_at) - killed_at:.1f} s, -> events flowing on every stream "
                f"{flowing_at - killed_at:.1f} s"
            )
            assert ha.primary_port() == ha.replica.port

            # The long-polls that waited through the failover answer with a reset: their id is gone.
            for answer in await asyncio.wait_for(asyncio.gather(*waiting), 40):
                assert answer.status_code == 200, answer.text
                assert [event["event"] for event in answer.json()["events"]][:1] == ["reset"], answer.text

            # Every worker is healthy again.
            await until(lambda: all(health(w).status_code == 200 for w in workers), 15, "health to be ok again")

            # Events published now reach every open stream exactly once, in order.
            after = [await asyncio.to_thread(publish, topic, data=f"after-{n}") for n in range(5)]
            await until(lambda: all(r.has(after[-1]) for r in recorders), 10, "every stream to get the new events")
            for recorder in recorders:
                ids = recorder.event_ids()
                assert not recorder.ended, f"{recorder.name} ended"
                assert len(ids) == len(set(ids)), f"{recorder.name} got an event twice: {ids}"
                assert [event_id for event_id in ids if event_id in after] == after, recorder.name
                # No silent gap: what the stream saw after the SIGKILL starts with a reset.
                first_after_kill = recorder.events_after(killed_at)[0]
                assert first_after_kill.event == "reset", f"{recorder.name}: {first_after_kill}"
                assert recorder.heartbeats_between(killed_at, flowing_at) >= 3, f"{recorder.name}: heartbeats stopped"

            # A client resuming from the lost id is told to reset, on a stream and a long-poll.
            async with open_stream(
                f"{workers[1].url}/events/stream/?topic={topic}", headers={"Last-Event-ID": lost}
            ) as late:
                assert (await late.next_event(timeout=10)).event == "reset"
            answer = await http.get(f"{workers[0].url}/events/poll/?topic={topic}&since={lost}")
            assert answer.json()["events"][0]["event"] == "reset"

    # Neither password ever reached a log or the health answer.
    for worker in workers:
        for text in (worker.log(), health(worker).text):
            assert DATA_PASSWORD not in text and SENTINEL_PASSWORD not in text


async def _check_outage(ha: SentinelSetup, workers: list[UvicornServer], topic: str, old_primary: int) -> None:
    """Right after the SIGKILL: every way in says 'not now', quickly, without hanging."""
    started = time.monotonic()
    with pytest.raises(PublishError) as raised:
        await asyncio.to_thread(publish, topic, "during the outage")
    assert time.monotonic() - started < PUBLISH_FAILS_WITHIN
    assert DATA_PASSWORD not in str(raised.value)

    async def refused_stream() -> list[Frame]:
        async with open_stream(f"{workers[0].url}/events/stream/?topic={topic}") as stream:
            assert stream.response.status_code == 200  # EventSource retries only after a 200
            return await stream.until_end(timeout=10)

    async def refused_poll() -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.get(f"{workers[1].url}/events/poll/?topic={topic}")

    frames, poll = await asyncio.gather(refused_stream(), refused_poll())
    assert ha.primary_port() == old_primary, "the failover finished before the outage could be observed"
    assert frames[0].get("retry") is not None
    assert any("unavailable" in comment for frame in frames for comment in frame.comments), frames
    assert poll.status_code == 503 and poll.headers["retry-after"], poll.text
    for worker in workers:
        answer = health(worker)
        assert answer.status_code == 503 and answer.json()["status"] == "unavailable", answer.text


def test_wrong_passwords_stop_the_server_at_start_up(ha: SentinelSetup, events_prefix: str) -> None:
    """A sentinel password or a Redis password that is refused is a clear start-up error, never a hang."""
    wrong_sentinel = ha.url.replace(f"sentinel_password={SENTINEL_PASSWORD}", "sentinel_password=not-it")
    wrong_data = ha.url.replace(f":{DATA_PASSWORD}@", ":not-it-either@")
    for url, secret in ((wrong_sentinel, "not-it"), (wrong_data, "not-it-either")):
        env = {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "REDIS_URL": url,
            "EVENTS_PREFIX": events_prefix,
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            [sys.executable, "-m", "uvicorn", "project.asgi:application", "--port", "0", "--lifespan", "on"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and "AuthenticationError" in result.stderr, result.stderr
        assert secret not in result.stderr


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
