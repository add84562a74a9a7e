"""Exceptions the events app raises to its callers."""

from __future__ import annotations


class PublishError(Exception):
    """An event could not be published (Redis unreachable, timed out, or refused it)."""


class HubUnavailable(Exception):
    """This worker cannot serve a new stream or poll right now; clients should retry later."""
