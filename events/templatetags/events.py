"""``{% load events %}``: the ``{% live_events %}`` tag, everything a page needs to subscribe.

::

    {% load events %}
    {% live_events "board" user_topic token=True %}

renders the subscribe config as JSON (``<script type="application/json"
id="live-events">``) and the ``<script>`` tag of ``events/client.js``:

- ``streamUrl`` and ``pollUrl`` from ``reverse()``, so a sub-path just works;
- ``lastEventId``: the newest event id when the tag renders (or the one the
  view passes as ``last_event_id=``), so the client resumes from there and
  misses nothing published between rendering and subscribing;
- ``token``: with ``token=True``, a signed subscribe token for the topics
  (``events.make_token``), for clients that cannot send the session cookie;
- ``refreshToken``: with ``refresh_token="<url or URL name>"``, where
  client.js gets a fresh token (JSON ``{"token": ...}``) when the one it has
  expired: a stream opened with a token ends at the token's expiry;
- ``topics`` and ``subscribe``: given topics (and not ``subscribe=False``),
  client.js subscribes by itself and the page gets ``live:<topic>`` DOM events
  (htmx: ``hx-trigger="live:board from:body"``) without any script of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django import template
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from ..backends.active import current_id
from ..backends.connection import describe_error
from ..backends.errors import REDIS_ERRORS
from ..conf import conf
from ..http.topics import validate_topic
from ..tokens import make_token

logger = logging.getLogger(__name__)

register = template.Library()

# Abort a long-poll this long after the server would have answered it.
POLL_TIMEOUT_MARGIN = 5.0


def _topic_names(values: Iterable[object]) -> list[str]:
    """Topic arguments, each a name or a list of names, flattened and validated, in order."""
    names: list[str] = []
    for value in values:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Iterable):
            raise template.TemplateSyntaxError(f"live_events: a topic must be a string or a list, not {value!r}")
        for item in items:
            name = validate_topic(item)
            if name not in names:
                names.append(name)
    return names


def _newest_id(topics: list[str]) -> str | None:
    """The id to resume from, or None ("from now") when Redis does not answer: the page still renders."""
    try:
        # The topics matter on a Redis Cluster only (a position per slot group).
        return current_id(topics)
    except REDIS_ERRORS as exc:
        logger.warning("live_events: cannot read the newest event id: %s", describe_error(exc))
        return None


def _url(name_or_path: str) -> str:
    """A URL name reversed (``"app:token"``), or a path or URL as given."""
    try:
        return reverse(name_or_path)
    except NoReverseMatch:
        return name_or_path


@register.simple_tag
def live_events(
    *topics: object,
    token: bool = False,
    subscribe: bool = True,
    last_event_id: str | None = None,
    element_id: str = "live-events",
    refresh_token: str | None = None,
) -> SafeString:
    """``{% live_events %}``: the JSON subscribe config and the client.js ``<script>`` tag.

    ``topics``: each a name or a list of names (validated). ``token=True``
    adds a subscribe token for them; ``subscribe=False`` leaves subscribing
    to your own script (``LiveEvents.config()``); ``last_event_id`` is an id
    the view read before querying the database (default: read when the tag
    renders); ``element_id`` is the JSON element's id (default
    ``live-events``).

    Example::

        {% load events %}
        <div hx-get="{% url 'board-fragment' %}" hx-trigger="live:board from:body">…</div>
        {% live_events "board" user_topic token=True %}
    """
    names = _topic_names(topics)
    if token and not names:
        raise template.TemplateSyntaxError("live_events: token=True needs the topics to grant")
    config = {
        "streamUrl": reverse("events:stream"),
        "pollUrl": reverse("events:poll"),
        "topics": names,
        "lastEventId": last_event_id or _newest_id(names),
        "token": make_token(names) if token else None,
        "refreshToken": _url(refresh_token) if refresh_token else None,
        "pollTimeout": int((conf.LONGPOLL_TIMEOUT + POLL_TIMEOUT_MARGIN) * 1000),
        "subscribe": bool(subscribe and names),
    }
    script = format_html('<script src="{}" data-live-events="{}"></script>', static("events/client.js"), element_id)
    return format_html("{}\n{}", json_script(config, element_id), script)
