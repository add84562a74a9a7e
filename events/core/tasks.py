"""Ending a task this code owns, and waiting with a timeout without ``asyncio.wait_for``."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and return once it has ended.

    The task's own ``CancelledError`` is not raised here; any other exception
    it ends with is. The caller's cancellation is: ``asyncio.wait`` (not
    ``await task``, whose ``CancelledError`` could be either) propagates it
    and leaves the task alone.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set.

    Not ``asyncio.wait_for``: on Python <= 3.11 it can swallow the caller's
    cancellation when the awaited event is set at the same moment (a client
    leaving while its stream waits on the hub would then go on as a ghost).
    See :func:`wait_shared`.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()


async def wait_shared(futures: list[asyncio.Future[None]], timeout: float) -> None:
    """Wait for ``futures``, which other clients share; TimeoutError after ``timeout`` seconds.

    Neither ``asyncio.wait_for`` nor ``gather``: on Python <= 3.11 ``wait_for``
    swallows a cancellation that arrives as the awaited future completes (a
    client that disconnects at once would keep its slot and subscription for
    good), and cancelling a ``gather`` cancels its children, the confirmations
    other clients wait on. ``asyncio.wait`` does neither: it propagates our
    cancellation and leaves the futures alone.
    """
    if not all(future.done() for future in futures):
        # (Usually they are: a topic already subscribed, a read already made.)
        _, pending = await asyncio.wait(futures, timeout=timeout)
        if pending:
            raise TimeoutError
    for future in futures:
        future.result()  # raises what a future failed with (HubUnavailable: the connection was lost)
