"""The live status board: named trackers (counters) and the log of changes to them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Tracker(models.Model):
    """One named counter on the board, e.g. "Spiders": 3."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=80)
    value = models.IntegerField(default=0)
    position = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


class Change(models.Model):
    """One change to a tracker: by whom (if signed in), by how much, and the value after it."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="changes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    delta = models.IntegerField()
    value = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.tracker.name} {self.delta:+d} -> {self.value}"
