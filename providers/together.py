"""Together AI: OpenAI-compatible, with a few deviations normalised before parsing.

Together's stream chunks may carry extra ``token`` / ``generated_text`` / ``stats`` fields
(ignored: ``generated_text`` repeats the whole answer), report ``finish_reason: "eos"``,
put ``finish_reason`` at the top level instead of on the choice (older API), put the text
in ``choices[].text`` without a ``delta``, omit ``model``, and send usage on the final
content chunk rather than a separate ``choices: []`` chunk. Its ``/models`` answer is a
bare JSON array. It honours ``n`` and ``stream_options.include_usage`` (some models only
report streaming usage when asked), so both are kept.
"""

from __future__ import annotations

from typing import Any, ClassVar

from providers.openai import OpenAIProvider
from providers.openai_format import FINISH_REASONS, OpenAIStreamParser


class TogetherStreamParser(OpenAIStreamParser):
    """OpenAI parsing after folding Together's chunk shape into OpenAI's."""

    def normalise(self, obj: dict[str, Any]) -> None:
        """Move top-level finish reasons onto the choice; treat bare ``text`` as a delta."""
        choices = obj.get("choices") or ()
        top_reason = obj.get("finish_reason")
        for choice in choices:
            if "delta" not in choice and isinstance(choice.get("text"), str):
                choice["delta"] = {"content": choice["text"]}
            if top_reason and not choice.get("finish_reason") and len(choices) == 1:
                choice["finish_reason"] = top_reason

    def map_finish_reason(self, reason: str) -> str:
        """``eos`` (end of sequence) is OpenAI's ``stop``."""
        return "stop" if reason == "eos" else FINISH_REASONS.get(reason, "stop")


class TogetherProvider(OpenAIProvider):
    """Streams ``POST https://api.together.xyz/v1/chat/completions``."""

    kind: ClassVar[str] = "together"
    supports_n: ClassVar[bool] = True
    default_base_url: ClassVar[str] = "https://api.together.xyz/v1"
    parser_class: ClassVar[type[OpenAIStreamParser]] = TogetherStreamParser
