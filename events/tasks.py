"""Ending a task this code owns, and waiting for an event without ``wait_for``."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and return once it has ended.

    Its ``CancelledError`` is the task's, not the caller's, so it is not
    raised here; any other exception the task ends with is.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set.

    Not ``asyncio.wait_for``: on Python <= 3.11 it can swallow the caller's
    cancellation when the awaited event is set at the same moment (a client
    leaving while its stream waits on the hub would then go on as a ghost).
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
