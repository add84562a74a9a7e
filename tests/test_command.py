"""``manage.py publish_event``: prints the id; bad input is a clear error."""

import subprocess
import sys
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command

from .servers import ROOT, history


def test_publish_event_prints_the_id_and_publishes(redis_client: redis.Redis, topic: str) -> None:
    out = StringIO()
    call_command("publish_event", topic, "--event", "changed", "--data", '{"id": 3}', stdout=out)
    event_id = out.getvalue().strip()
    [(found_id, fields)] = [(i, f) for i, f in history(redis_client) if f["t"] == topic]
    assert (found_id, fields["e"], fields["d"]) == (event_id, "changed", '{"id":3}')


def test_publish_event_defaults_to_invalidate_with_null_data(redis_client: redis.Redis, topic: str) -> None:
    out = StringIO()
    call_command("publish_event", topic, stdout=out)
    [fields] = [f for _, f in history(redis_client, out.getvalue().strip()) if f["t"] == topic]
    assert (fields["e"], fields["d"]) == ("invalidate", "null")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["t", "--data", "{not json"], "--data is not valid JSON"),
        (["bad topic"], "Invalid topic"),
        (["t", "--event", "reset"], "reserved"),
    ],
)
def test_publish_event_reports_bad_input_clearly(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("publish_event", *args)


def test_publish_event_runs_as_a_real_command(redis_url: str, events_prefix: str, topic: str) -> None:
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "manage.py", "publish_event", topic, "--data", "[1]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count("-") == 1
    bad = subprocess.run(
        [sys.executable, "manage.py", "publish_event", topic, "--data", "nope"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "CommandError: --data is not valid JSON" in bad.stderr
