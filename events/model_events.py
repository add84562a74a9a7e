"""Publishing model changes: an invalidation after every committed save or delete.

Connect once, e.g. in your ``AppConfig.ready()``::

    from events.model_events import publish_changes

    publish_changes(Tracker, topic="board")                      # one topic for the model
    publish_changes(Note, topic=lambda note: f"user:{note.owner_id}")  # a topic per row

Each save or delete of an instance publishes ``invalidate`` on the topic, with
``{"model": "app.model", "pk": ..., "action": "saved" | "deleted"}`` as data,
after the transaction commits (``publish_on_commit``): clients that re-fetch
never read the old rows, and a rolled-back change publishes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save

from .http.topics import validate_topic
from .publishing import DEFAULT_EVENT, publish_on_commit

TopicSpec = str | Callable[[Any], str]


def publish_changes(model: type[models.Model], topic: TopicSpec, *, event: str = DEFAULT_EVENT) -> Callable[[], None]:
    """Publish on ``topic`` (a name, or a function of the instance) after each committed change.

    Connects ``post_save`` and ``post_delete`` of ``model`` to
    :func:`publish_on_commit`, with the payload ``{"model": "app.model", "pk":
    pk, "action": "saved" | "deleted"}``. Returns a function that disconnects
    the receivers again (for tests, or code that publishes only for a while).
    ``QuerySet.update()`` and ``bulk_create()`` send no signal, so they publish
    nothing.

    Example (in ``AppConfig.ready()``)::

        from events import publish_changes

        publish_changes(Tracker, topic="board")
        publish_changes(Note, topic=lambda note: f"user:{note.owner_id}")
    """
    if isinstance(topic, str):
        validate_topic(topic)
    label = model._meta.label_lower

    def topic_for(instance: Any) -> str:
        return topic(instance) if callable(topic) else topic

    def receiver(action: str) -> Callable[..., None]:
        def publish_change(sender: type[models.Model], instance: Any, using: str, **kwargs: Any) -> None:
            data = {"model": label, "pk": instance.pk, "action": action}
            publish_on_commit(topic_for(instance), data, event, using=using)

        return publish_change

    uid = f"events.publish_changes:{label}:{topic if isinstance(topic, str) else id(topic)}"
    post_save.connect(receiver("saved"), sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(receiver("deleted"), sender=model, weak=False, dispatch_uid=uid + ":delete")

    def disconnect() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")

    return disconnect
