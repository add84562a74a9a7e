"""Exceptions the events app raises to its callers."""

from __future__ import annotations


class PublishError(Exception):
    """An event could not be published (Redis unreachable, timed out, or refused it).

    Raised by :func:`publish` and :func:`apublish` within about a second; the
    message never shows a password.

    Example::

        from events import PublishError, publish

        try:
            publish("board")
        except PublishError:
            logger.warning("board not invalidated; the next change will cover it")
    """


class HubUnavailable(Exception):
    """This worker cannot serve a new stream or poll right now; clients should retry later."""
