"""The incremental SSE parser: line endings, fields, comments, UTF-8 split across reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from providers.sse import EventTooLarge, SSEDecoder, SSEEvent, aiter_sse

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


# Caps: a line that never ends, or an event whose data lines never stop, raise
# EventTooLarge once past max_event_bytes instead of buffering without bound.
LIMIT = 1024


def feed_until_refused(decoder: SSEDecoder, pieces: Iterable[bytes]) -> tuple[list[SSEEvent],
                                                                               int]:
    """Feed pieces until the decoder refuses one; (events before it, bytes fed)."""
    events: list[SSEEvent] = []
    fed = 0
    with pytest.raises(EventTooLarge) as info:
        for piece in pieces:
            fed += len(piece)
            events += decoder.feed(piece)
    assert info.value.limit == LIMIT
    return events, fed


def endless(piece: bytes, count: int = 100_000) -> Iterable[bytes]:
    return (piece for _ in range(count))


@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_a_line_that_never_ends_is_refused_past_the_cap(size: int) -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    events, fed = feed_until_refused(decoder, [b"data: ", *endless(b"x" * size)])
    assert events == []
    assert LIMIT < fed <= LIMIT + size + 6  # refused with the first piece over the cap


def test_a_comment_that_never_ends_is_refused_too() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    feed_until_refused(decoder, [b": keep", *endless(b"-" * 10)])


def test_data_lines_add_up_to_one_event() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    events, fed = feed_until_refused(decoder, [b"data: ok\n\n", *endless(b"data: 0123456789\n")])
    assert events == [SSEEvent("message", "ok")]
    assert fed < 2 * LIMIT


def test_an_event_of_exactly_the_cap_passes() -> None:
    data = b"x" * (LIMIT - 10)
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    events = decoder.feed(b"data: " + data[:500] + b"\ndata: " + data[500:] + b"\n\n")
    assert events == [SSEEvent("message", (data[:500] + b"\n" + data[500:]).decode())]
    assert len(events[0].data) == LIMIT - 9
    line = b"data: " + b"y" * (LIMIT - 6)  # a line of exactly LIMIT bytes
    assert decoder.feed(line + b"\n\n") == [SSEEvent("message", "y" * (LIMIT - 6))]


def test_events_before_the_oversized_one_still_come_out() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    first = b"data: one\n\ndata: two\n\n"
    assert decoder.feed(first + b"data: " + b"z" * 2 * LIMIT) == [
        SSEEvent("message", "one"), SSEEvent("message", "two")]
    with pytest.raises(EventTooLarge):
        decoder.feed(b"more")
    with pytest.raises(EventTooLarge):
        decoder.flush()


def test_a_line_in_many_reads_is_joined_once() -> None:
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    assert decoder.feed(b"data: ") == []
    for _ in range(10_000):
        assert decoder.feed(b"ab") == []
    assert decoder.feed(b"c\r") == [] and decoder.feed(b"\n\n") == [
        SSEEvent("message", "ab" * 10_000 + "c")]


async def test_aiter_sse_passes_the_cap_on() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: ok\n\n"
        for _ in range(1000):
            yield b"y" * 100

    seen = []
    with pytest.raises(EventTooLarge):
        async for event in aiter_sse(chunks(), max_event_bytes=LIMIT):
            seen.append(event)
    assert seen == [SSEEvent("message", "ok")]
