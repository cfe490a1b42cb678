"""The incremental SSE parser: line endings, fields, comments, UTF-8 split across reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from providers.sse import SSEDecoder, SSEEvent, aiter_sse

STREAM = (
    ": keep-alive comment\n"
    "event: message_start\n"
    "data: {\"text\":\"café 日本 👋🏽\"}\n"
    "\n"
    "data: first line\n"
    "data: second line\n"
    "id: 7\n"
    "retry: 1000\n"
    "\n"
    "data:no-space\n"
    "data\n"
    "\n"
    "event: ignored-without-data\n"
    "\n"
    "data:  two leading spaces keep one\n"
    "unknown: field\n"
    "\n"
    "data: [DONE]\n"
    "\n"
)
EXPECTED = [
    SSEEvent("message_start", '{"text":"café 日本 👋🏽"}'),
    SSEEvent("message", "first line\nsecond line"),
    SSEEvent("message", "no-space\n"),
    SSEEvent("message", " two leading spaces keep one"),
    SSEEvent("message", "[DONE]"),
]


def decode_all(pieces: Iterable[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_events_survive_any_split_and_line_ending(newline: str, size: int) -> None:
    data = STREAM.replace("\n", newline).encode()
    assert decode_all(pieces_of(data, size)) == EXPECTED


def test_every_two_piece_split_of_multibyte_text() -> None:
    data = "data: é日本語👋🏽\r\n\r\n".encode()
    for cut in range(len(data) + 1):
        assert decode_all([data[:cut], data[cut:]]) == [SSEEvent("message", "é日本語👋🏽")]


def test_crlf_split_between_reads_is_one_line_ending() -> None:
    # "\r" ends one read and "\n" starts the next: still one line break, not a blank line.
    assert decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [
        SSEEvent("message", "a\nb")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert decode_all([b"data: a\rdata: b\r\ndata: c\n\r\n"]) == [
        SSEEvent("message", "a\nb\nc")]


def test_byte_order_mark_is_ignored_even_when_split() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n"
    assert decode_all(pieces_of(data, 1)) == [SSEEvent("message", "x")]


def test_unterminated_final_event_is_dispatched_at_end_of_stream() -> None:
    assert decode_all([b"data: a\n\ndata: [DONE]"]) == [
        SSEEvent("message", "a"), SSEEvent("message", "[DONE]")]


def test_event_name_resets_after_each_event() -> None:
    assert decode_all([b"event: ping\ndata: 1\n\ndata: 2\n\n"]) == [
        SSEEvent("ping", "1"), SSEEvent("message", "2")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode_all([b"data: \xff\n\n"]) == [SSEEvent("message", "\ufffd")]


def test_feed_returns_only_completed_events() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: par") == []
    assert decoder.feed(b"tial\n") == []
    assert decoder.feed(b"\ndata: next") == [SSEEvent("message", "partial")]
    assert decoder.flush() == [SSEEvent("message", "next")]


async def test_aiter_sse_over_an_async_byte_stream() -> None:
    async def reads() -> AsyncIterator[bytes]:
        for piece in pieces_of(STREAM.encode(), 3):
            yield piece

    assert [event async for event in aiter_sse(reads())] == EXPECTED


def test_large_stream_is_parsed_in_one_pass() -> None:
    event = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n'
    data = event * 20_000
    events = decode_all(pieces_of(data, 16_384))
    assert len(events) == 20_000
    assert events[-1].data == '{"choices":[{"delta":{"content":"hello"}}]}'
