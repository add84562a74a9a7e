"""Live invalidation events for Django: SSE and long-poll, fed by Redis.

Public API::

    from events import publish, apublish, publish_on_commit
    from events import revoke, arevoke   # end a user's open streams everywhere

The functions are imported on first use, so importing ``events`` does nothing
(no settings read, no connection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The package version (pyproject.toml reads it from here); see CHANGELOG.md.
__version__ = "0.1.0"

__all__ = [
    "PublishError",
    "acurrent_id",
    "apublish",
    "arevoke",
    "current_id",
    "make_token",
    "publish",
    "publish_changes",
    "publish_on_commit",
    "revoke",
]

if TYPE_CHECKING:
    from .backends.active import acurrent_id, current_id
    from .exceptions import PublishError
    from .model_events import publish_changes
    from .publishing import apublish, publish, publish_on_commit
    from .revocation import arevoke, revoke
    from .tokens import make_token

_EXPORTS = {
    "publish": "publishing",
    "apublish": "publishing",
    "publish_on_commit": "publishing",
    "publish_changes": "model_events",
    "PublishError": "exceptions",
    "make_token": "tokens",
    "revoke": "revocation",
    "arevoke": "revocation",
    "current_id": "backends.active",
    "acurrent_id": "backends.active",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'events' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"events.{module}"), name)
