"""Signed, expiring subscribe tokens, for clients that cannot send cookies.

A page (or any server code) that has decided a client may read some topics
hands it ``make_token(topics)``; the client passes it as ``?token=...``. The
token is signed with ``SECRET_KEY`` (``django.core.signing``) and expires
after ``EVENTS["TOKEN_MAX_AGE"]`` seconds. It grants exactly the topics it
names; any other requested topic still goes through the authorization hook.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.core import signing

from .conf import conf
from .http.topics import validate_topic

SALT = "events.subscribe-token"


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


def granted_topics(token: str) -> frozenset[str]:
    """The topics ``token`` grants; InvalidToken if it is forged, malformed or expired."""
    try:
        names = signing.loads(token, salt=SALT, max_age=timedelta(seconds=conf.TOKEN_MAX_AGE))
    except signing.SignatureExpired:
        raise InvalidToken("The subscribe token has expired.") from None
    except signing.BadSignature:
        raise InvalidToken("The subscribe token is invalid.") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidToken("The subscribe token is invalid.")
    return frozenset(names)
