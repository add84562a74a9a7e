"""Signed, expiring subscribe tokens, for clients that cannot send cookies.

A page (or any server code) that has decided a client may read some topics
hands it ``make_token(topics)``; the client passes it as ``?token=...``. The
token is signed with ``SECRET_KEY`` (``django.core.signing``) and expires
after ``EVENTS["TOKEN_MAX_AGE"]`` seconds. It grants exactly the topics it
names; any other requested topic still goes through the authorization hook.

A stream opened with a token ends when the token expires (a little before,
jittered, with its ``retry:`` hint), so a token is never a right for longer
than ``TOKEN_MAX_AGE``; client.js's ``refreshToken`` option fetches a fresh
one before reconnecting. A token dated in the future is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import NamedTuple

from django.core import signing

from .conf import conf
from .http.topics import validate_topic
from .internals import signed_timestamp

SALT = "events.subscribe-token"
# Seconds a token's date may be ahead of this server's clock (hosts' clocks
# differ a little; Django's timestamps have a resolution of one second).
MAX_CLOCK_SKEW = 5


class InvalidToken(Exception):
    pass


def make_token(topics: Iterable[str]) -> str:
    """A token granting read access to ``topics`` until ``TOKEN_MAX_AGE`` has passed.

    Signed with ``SECRET_KEY``; a client passes it as ``?token=`` (the JS
    client's ``token`` option, the template tag's ``token=True``) when it
    cannot send the session cookie. Raises ValueError for a bad topic or none.

    Example::

        from events import make_token

        token = make_token(["team:red"])
        url = f"{reverse('events:stream')}?topic=team:red&token={token}"
    """
    names = sorted({validate_topic(topic) for topic in topics})
    if not names:
        raise ValueError("A subscribe token needs at least one topic.")
    return signing.dumps(names, salt=SALT, compress=True)


class Grant(NamedTuple):
    """What a valid token grants: its topics, until ``expires`` (Unix time)."""

    topics: frozenset[str]
    expires: float


def read_token(token: str) -> Grant:
    """The topics ``token`` grants and until when; InvalidToken if forged, malformed, expired or dated ahead.

    A token dated more than ``MAX_CLOCK_SKEW`` seconds in the future is
    refused: no server of the site made it with a correct clock, and it would
    outlive ``TOKEN_MAX_AGE``.
    """
    try:
        names = signing.loads(token, salt=SALT, max_age=timedelta(seconds=conf.TOKEN_MAX_AGE))
    except signing.SignatureExpired:
        raise InvalidToken("The subscribe token has expired.") from None
    except signing.BadSignature:
        raise InvalidToken("The subscribe token is invalid.") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidToken("The subscribe token is invalid.")
    signed_at = signed_timestamp(token)
    if signed_at > time.time() + MAX_CLOCK_SKEW:
        raise InvalidToken("The subscribe token is dated in the future.")
    return Grant(frozenset(names), signed_at + conf.TOKEN_MAX_AGE)


def granted_topics(token: str) -> frozenset[str]:
    """The topics ``token`` grants; InvalidToken if it is forged, malformed, expired or dated in the future."""
    return read_token(token).topics
