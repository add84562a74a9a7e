"""``{% load events %}{% live_events %}``: the subscribe config and client.js, as a page renders them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.template import Context, Template, TemplateSyntaxError
from django.test import override_settings
from django.test.utils import override_script_prefix

from events import current_id, publish
from events.core.ids import parse_id
from events.tokens import granted_topics
from project import settings as project_settings
from tests.servers import free_port


def render(source: str, **context: Any) -> str:
    return Template("{% load events %}" + source).render(Context(context))


def config_of(html: str, element_id: str = "live-events") -> dict[str, Any]:
    opening = f'<script id="{element_id}" type="application/json">'
    start = html.index(opening) + len(opening)
    return json.loads(html[start : html.index("</script>", start)])  # type: ignore[no-any-return]


def test_the_tag_renders_the_config_and_the_client_script(topic: str) -> None:
    newest = publish(topic)
    html = render('{% live_events "board" topics %}', topics=[topic, "board"])
    config = config_of(html)
    assert config["streamUrl"] == "/events/stream/"
    assert config["pollUrl"] == "/events/poll/"
    assert config["topics"] == ["board", topic]
    assert parse_id(config["lastEventId"]) >= parse_id(newest)
    assert config["token"] is None
    assert config["subscribe"] is True
    assert '<script src="/static/events/client.js" data-live-events="live-events"></script>' in html


def test_urls_follow_the_script_prefix() -> None:
    # STATIC_URL is prefixed on first read and then cached: read it afresh.
    with override_script_prefix("/sub/path/"), override_settings(STATIC_URL=project_settings.STATIC_URL):
        html = render('{% live_events "board" %}')
    config = config_of(html)
    assert (config["streamUrl"], config["pollUrl"]) == ("/sub/path/events/stream/", "/sub/path/events/poll/")
    assert 'src="/sub/path/static/events/client.js"' in html


def test_a_signed_token_when_asked_for() -> None:
    config = config_of(render('{% live_events "board" "user:7" token=True %}'))
    assert granted_topics(config["token"]) == {"board", "user:7"}


def test_options() -> None:
    html = render('{% live_events "board" subscribe=False last_event_id="5-0" element_id="cfg" %}')
    config = config_of(html, "cfg")
    assert (config["subscribe"], config["lastEventId"]) == (False, "5-0")
    assert 'data-live-events="cfg"' in html
    assert config_of(render("{% live_events %}"))["subscribe"] is False  # no topics: nothing to subscribe to


def test_bad_topics_are_template_errors() -> None:
    with pytest.raises(ValueError, match="Invalid topic"):
        render('{% live_events "no spaces" %}')
    with pytest.raises(TemplateSyntaxError, match="token=True needs"):
        render("{% live_events token=True %}")


def test_the_page_still_renders_while_redis_is_down() -> None:
    down = {**settings.EVENTS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with override_settings(EVENTS=down):
        config = config_of(render('{% live_events "board" %}'))
    assert config["lastEventId"] is None
    assert current_id()  # the real Redis is untouched


def test_a_token_refresh_url_when_given() -> None:
    config = config_of(render('{% live_events "board" token=True refresh_token="events:health" %}'))
    assert config["refreshToken"] == "/events/health/"  # a URL name, reversed
    config = config_of(render('{% live_events "board" token=True refresh_token="/my/token/" %}'))
    assert config["refreshToken"] == "/my/token/"
    assert config_of(render('{% live_events "board" %}'))["refreshToken"] is None
