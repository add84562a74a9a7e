"""Who opened each stream and long-poll of this process, and ending them when that right ends.

Each client (open stream or waiting long-poll) is registered at open with
its :class:`Access`: the user's primary key and a hash of the session key
that opened it (never the raw key, which is a credential), and the expiry of
the signed token it used, if any. A revocation names a user or a session;
the registry finds the matching clients through two indexes, so ending them
costs O(matching clients), and nothing is done per event per client.

Revocations reach every process through Redis, as events on
:data:`CONTROL_TOPIC`, published like any event (so the backend's guarantees
hold: history, gap filling after a reconnect, single node and cluster
alike). The hub subscribes :class:`Revocations` to that topic while it has
at least one signed-in client (one channel per worker, idle but for
revocations), as part of that client's attach. A revocation that arrives
between a client's authorization and its registration is caught by
:attr:`Revocations.recent`. Should the hub learn that it may have missed
events (a ``reset`` on the control topic, or for everything), it ends every
registered client: they reconnect and are authorized again with their
current rights.

A revoked client ends cleanly (``close("revoked")``): a stream with its
``retry:`` hint (the browser reconnects with the rights it has now, and the
old session gets ``403``), a long-poll with an empty answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass

from ..core.messages import Message
from .subscriber import Subscriber

logger = logging.getLogger("events.revocation")

# A topic no client can ask for: valid topics start with a letter, digit or
# '_' (http/topics.py), this one with '-'. Published to by events.revocation only.
CONTROL_TOPIC = "-revoke"
REVOKE_EVENT = "revoke"
# The close reasons of a client whose right to read ended.
REVOKED = "revoked"
TOKEN_EXPIRED = "token-expired"
ENDED_RIGHTS = frozenset({REVOKED, TOKEN_EXPIRED})
# Seconds revocations are remembered, for clients authorized just before one
# arrived and registered just after (see register()).
RECENT_SECONDS = 30.0
# A token stream ends this much before the token's expiry at most (jitter),
# so the streams of one page load do not all reconnect in the same second.
TOKEN_JITTER_FRACTION = 0.05
TOKEN_JITTER_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Access:
    """What a client was allowed with, recorded at open.

    ``user``: the primary key (as text) of the logged-in user, or None;
    ``session``: :func:`events.revocation.session_hash` of the session key,
    or None; ``token_expires``: Unix time at which its signed token expires,
    or None; ``checked_at``: loop time just before it was authorized.
    """

    user: str | None = None
    session: str | None = None
    token_expires: float | None = None
    checked_at: float = 0.0

    @property
    def revocable(self) -> bool:
        return self.user is not None or self.session is not None


def control_payload(*, user: str | None = None, session: str | None = None) -> str:
    """The JSON data of a revocation event."""
    return json.dumps({"user": user} if user is not None else {"session": session}, separators=(",", ":"))


class Revocations(Subscriber):
    """The registry of one hub, and its listener on :data:`CONTROL_TOPIC`.

    A :class:`Subscriber` so that the hub fans control events out to it like
    to any client of the topic; it is never in the hub's streams or polls,
    and overrides :meth:`push`, the one method the hub calls on it.
    """

    __slots__ = ("by_session", "by_user", "recent", "registered", "timers")

    def __init__(self) -> None:
        super().__init__(frozenset({CONTROL_TOPIC}), 1, is_stream=False)
        self.by_user: dict[str, set[Subscriber]] = {}
        self.by_session: dict[str, set[Subscriber]] = {}
        self.registered: dict[Subscriber, Access] = {}
        self.timers: dict[Subscriber, asyncio.TimerHandle] = {}
        # (loop time received, "user" | "session" | "all", key) of the last RECENT_SECONDS.
        self.recent: deque[tuple[float, str, str]] = deque()

    # Clients -------------------------------------------------------------

    def register(self, client: Subscriber, access: Access) -> None:
        """Remember who opened ``client``; end it at once if that was revoked since it was authorized."""
        loop = asyncio.get_running_loop()
        if access.revocable:
            self.registered[client] = access
            if access.user is not None:
                self.by_user.setdefault(access.user, set()).add(client)
            if access.session is not None:
                self.by_session.setdefault(access.session, set()).add(client)
            for received, kind, key in self.recent:
                if received >= access.checked_at and (
                    kind == "all" or (kind, key) in (("user", access.user), ("session", access.session))
                ):
                    client.close(REVOKED)
                    break
        if access.token_expires is not None:
            lifetime = max(0.0, access.token_expires - time.time())
            jitter = random.uniform(0, min(lifetime * TOKEN_JITTER_FRACTION, TOKEN_JITTER_MAX))
            self.timers[client] = loop.call_later(lifetime - jitter, client.close, TOKEN_EXPIRED)

    def watches(self, client: Subscriber) -> bool:
        """Whether ``client`` is registered as opened by a user or session (it needs the control topic)."""
        return client in self.registered

    def forget(self, client: Subscriber) -> None:
        """Drop ``client`` (it ended). Synchronous, cheap and idempotent, like ``Hub.detach``."""
        timer = self.timers.pop(client, None)
        if timer is not None:
            timer.cancel()
        access = self.registered.pop(client, None)
        if access is None:
            return
        for index, key in ((self.by_user, access.user), (self.by_session, access.session)):
            if key is None:
                continue
            clients = index.get(key)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del index[key]

    def revoke_locally(self, *, user: str | None = None, session: str | None = None) -> int:
        """End this process's clients opened by ``user`` or ``session``; return how many."""
        self._remember("user" if user is not None else "session", user or session or "")
        clients = set(self.by_user.get(user, ())) if user is not None else set()
        if session is not None:
            clients |= self.by_session.get(session, set())
        for client in clients:
            client.close(REVOKED)
        if clients:
            # The session is named by its hash: the key itself is a credential.
            who = f"user:{user}" if user is not None else f"session:{session}"
            logger.info("events.revoked clients=%d by=%s", len(clients), who)
        return len(clients)

    def revoke_all(self, why: str) -> None:
        """End every registered client: revocations may have been lost (``why``)."""
        self._remember("all", "")
        clients = list(self.registered)
        for client in clients:
            client.close(REVOKED)
        if clients:
            logger.warning("events: %s; ending %d signed-in clients so they are authorized again", why, len(clients))

    def _remember(self, kind: str, key: str) -> None:
        now = asyncio.get_running_loop().time()
        self.recent.append((now, kind, key))
        while self.recent and self.recent[0][0] < now - RECENT_SECONDS:
            self.recent.popleft()

    # The hub's side ------------------------------------------------------

    def push(self, message: Message) -> None:
        """A control event (or a reset of the control topic) from Redis."""
        if message.is_reset:
            self.revoke_all("revocations may have been missed (reset)")
            return
        if message.event != REVOKE_EVENT:
            return
        try:
            data = json.loads(message.data_json)
            user, session = data.get("user"), data.get("session")
        except (ValueError, AttributeError):
            logger.warning("events: skipped a malformed revocation %s", message.id)
            return
        if isinstance(user, str):
            self.revoke_locally(user=user)
        elif isinstance(session, str):
            self.revoke_locally(session=session)
