"""Frame encoding, byte for byte."""

import pytest

from events.core import sse


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "x", "id": "1-0"}, b"id: 1-0\ndata: x\n\n"),
        ({"data": "x", "event": "invalidate"}, b"event: invalidate\ndata: x\n\n"),
        (
            {"data": '{"topic": "s", "data": null}', "id": "17-3", "event": "invalidate"},
            b'id: 17-3\nevent: invalidate\ndata: {"topic": "s", "data": null}\n\n',
        ),
        ({"data": "caf\u00e9"}, "data: caf\u00e9\n\n".encode()),
        ({"data": ": not a comment"}, b"data: : not a comment\n\n"),
    ],
)
def test_encode_event_is_exact(kwargs: dict[str, str], expected: bytes) -> None:
    assert sse.encode_event(**kwargs) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "1\n2"), ("id", "1\r2"), ("id", "1\x002"), ("event", "a\nb"), ("event", "a\r\nb")],
)
def test_encode_event_refuses_line_breaks_in_single_line_fields(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"SSE {field}"):
        sse.encode_event("x", **{field: value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b":\n\n"),
        ("heartbeat", b": heartbeat\n\n"),
        ("two\nlines", b": two\n: lines\n\n"),
    ],
)
def test_encode_comment_is_exact(text: str, expected: bytes) -> None:
    assert sse.encode_comment(text) == expected


def test_encode_retry_is_digits_only() -> None:
    assert sse.encode_retry(2500) == b"retry: 2500\n\n"


@pytest.mark.parametrize("value", [-1, 1.5, "100", True])
def test_encode_retry_refuses_non_integers(value: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        sse.encode_retry(value)  # type: ignore[arg-type]
