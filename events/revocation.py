"""Ending access when the right to it ends: sign-out, deactivation, password change, ``revoke()``.

Public API::

    events.revoke(user)          # sync: end every stream and long-poll opened by ``user``
    await events.arevoke(user)   # async

Every open stream and waiting long-poll records at open who opened it (see
``core/revocations.py``): the user's primary key and a SHA-256 hash of the
session key (never the key itself). A revocation is published through Redis
on an internal control topic that every worker's hub listens to, and each
hub ends its matching clients cleanly: a stream with its ``retry:`` hint (the
browser reconnects with its current rights: the old session now gets
``403``), a waiting long-poll with an empty answer.

Django's own changes revoke by themselves (connected in ``apps.py``):

- ``user_logged_out`` (``logout()``): the streams of that session;
- a user saved with ``is_active`` turned off, or a new password (which
  changes the session auth hash): every stream of that user. Compared with
  the values the instance was loaded with (``post_init``), so no query.
  ``QuerySet.update()`` sends no signal: call :func:`revoke` after one.

Revocations are published at once and, inside a transaction, once more
when it commits: a client that reconnected before the commit (and so may
have been authorized with the old rights) is ended again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.models.signals import post_init, post_save
from django.http import HttpRequest

from .backends.active import get_backend
from .backends.errors import REDIS_ERRORS
from .core.revocations import CONTROL_TOPIC, REVOKE_EVENT, Access, control_payload
from .exceptions import PublishError
from .publishing import publish_failed

logger = logging.getLogger("events.revocation")

# What a user's rights to read their topics depend on (the session auth hash
# is an HMAC of the password).
RIGHTS_FIELDS = ("is_active", "password")
_SNAPSHOT = "_events_rights"


def session_hash(session_key: str) -> str:
    """The name of a session in revocations and logs: not the key, which is a credential."""
    return hashlib.sha256(f"events.session:{session_key}".encode()).hexdigest()[:32]


def _user_key(user: Any) -> str:
    pk = getattr(user, "pk", user)
    if pk is None or isinstance(pk, bool):
        raise ValueError(f"revoke() needs a saved user (or its primary key), got {user!r}")
    return str(pk)


def _publish(payload: str) -> None:
    try:
        get_backend().publish(CONTROL_TOPIC, REVOKE_EVENT, payload)
    except REDIS_ERRORS as exc:
        raise publish_failed(CONTROL_TOPIC, exc) from exc


def _in_transaction() -> bool:
    try:
        return not transaction.get_autocommit()
    except (ImproperlyConfigured, DatabaseError):
        return False  # no usable database: no transaction either


def _revoke(payload: str, *, raises: bool) -> None:
    """Publish now; inside a transaction, once more when it commits.

    Now: the streams end within 2 s whatever the transaction does. Again
    after the commit: a client that reconnected in between (after its
    ``retry:`` delay, usually long after the commit) may have been authorized
    with the rights the transaction was taking away; the second one ends it.
    """
    try:
        _publish(payload)
    except PublishError as exc:
        if raises:
            raise
        logger.warning("events: could not publish a revocation: %s", exc)
    if _in_transaction():
        transaction.on_commit(lambda: _publish(payload), robust=True)


def revoke(user: Any) -> None:
    """End every open stream and waiting long-poll opened by ``user`` (a user or its primary key), everywhere.

    Within 2 s on every worker of every host sharing the Redis. Inside a
    transaction, once more when it commits (see :func:`_revoke`). Raises
    PublishError when Redis cannot be reached. Sign-out, deactivation and a
    password change call it by themselves; call it when a user's rights
    change in a way the authorization hook sees and Django does not.

    Example::

        from events import revoke

        membership.delete()  # the user may no longer read team:red
        revoke(membership.user)  # their open streams end and reconnect with their current rights
    """
    _revoke(control_payload(user=_user_key(user)), raises=True)


async def arevoke(user: Any) -> None:
    """Async version of :func:`revoke` (published at once: async code runs outside transactions).

    Example::

        from events import arevoke

        await arevoke(request.user)
    """
    try:
        await get_backend().apublish(CONTROL_TOPIC, REVOKE_EVENT, control_payload(user=_user_key(user)))
    except REDIS_ERRORS as exc:
        raise publish_failed(CONTROL_TOPIC, exc) from exc


def revoke_session(session_key: str) -> None:
    """End every stream and long-poll opened with the session ``session_key`` (errors are logged)."""
    _revoke(control_payload(session=session_hash(session_key)), raises=False)


async def access_of(request: HttpRequest, *, token_expires: float | None, checked_at: float) -> Access:
    """Who opens this subscription: the signed-in user's primary key and the session's hash.

    Called after authorization, so the user is usually loaded already (the
    request caches it); for a visitor without a session it costs nothing.
    """
    from django.conf import settings

    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME) if hasattr(request, "session") else None
    user_pk: str | None = None
    auser = getattr(request, "auser", None)
    if auser is not None:
        user = await auser()
        if user.is_authenticated:
            user_pk = str(user.pk)
    return Access(
        user=user_pk,
        session=session_hash(session_key) if session_key else None,
        token_expires=token_expires,
        checked_at=checked_at,
    )


# Signal receivers --------------------------------------------------------


def on_logout(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if session_key:
        revoke_session(session_key)


def _rights(instance: Any) -> tuple[object, object]:
    # From __dict__: a deferred field is not loaded (no query); it reads as None.
    values = vars(instance)
    return values.get("is_active", True), values.get("password")


def on_user_init(sender: type, instance: Any, **kwargs: object) -> None:
    setattr(instance, _SNAPSHOT, _rights(instance))


def on_user_save(
    sender: type, instance: Any, created: bool = False, raw: bool = False, update_fields: Any = None, **kwargs: object
) -> None:
    before = getattr(instance, _SNAPSHOT, None)
    now = _rights(instance)
    setattr(instance, _SNAPSHOT, now)
    if created or raw or before is None:
        return
    if update_fields is not None and not set(RIGHTS_FIELDS) & set(update_fields):
        return  # e.g. last_login at every login
    deactivated = bool(before[0]) and not now[0]
    if deactivated or before[1] != now[1]:
        _revoke(control_payload(user=_user_key(instance)), raises=False)


def connect_signals() -> None:
    """Revoke on sign-out, deactivation and password change (``AppConfig.ready``)."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.auth"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out

    user_logged_out.connect(on_logout, dispatch_uid="events.revocation.logout")
    user_model = get_user_model()
    post_init.connect(on_user_init, sender=user_model, dispatch_uid="events.revocation.user_init")
    post_save.connect(on_user_save, sender=user_model, dispatch_uid="events.revocation.user_save")
