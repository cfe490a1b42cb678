"""Validate an OpenAI embeddings body once, at the edge, naming the bad field."""

from __future__ import annotations

from typing import Any

from gateway.errors import invalid
from providers.base import EmbeddingRequest, embedding_items

KNOWN = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's own limit on the inputs of one request
# The whole request's size: OpenAI refuses over 300,000 tokens across all inputs. Token
# ids count one each; text is bounded by characters (about four a token in English).
MAX_TOKEN_IDS = 300_000
MAX_CHARS = 1_200_000
MAX_TOKEN_ID = 2**31 - 1
MAX_DIMENSIONS = 65_536  # far above any model's; a model's own limit is its upstream's
PROMPT_CHARS = 4000  # of the inputs' text, stored in the row's prompt (what history searches)


def parse_embeddings(data: dict[str, Any]) -> EmbeddingRequest:
    """The request addressed to its public model; a 400 naming the field otherwise."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "'model' is required and must be a non-empty string")
    value = _input(data.get("input"))
    encoding = data.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool)
                                   or not isinstance(dimensions, int)
                                   or not 1 <= dimensions <= MAX_DIMENSIONS):
        raise invalid("dimensions", f"'dimensions' must be an integer between 1 and "
                      f"{MAX_DIMENSIONS}")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", "'user' must be a string")
    return EmbeddingRequest(model=model, input=value, encoding_format=encoding,
                            dimensions=dimensions, user=user,
                            extra={k: v for k, v in data.items() if k not in KNOWN})


def _input(value: Any) -> str | list[str] | list[int] | list[list[int]]:
    """A string, strings, token ids, or arrays of them: never empty, within bounds."""
    if isinstance(value, str):
        if not value:
            raise invalid("input", "'input' must not be an empty string")
        if len(value) > MAX_CHARS:
            raise invalid("input", f"'input' is longer than {MAX_CHARS} characters")
        return value
    if not isinstance(value, list) or not value:
        raise invalid("input", "'input' is required: a string, an array of strings, an "
                      "array of token ids or an array of token id arrays, not empty")
    if len(value) > MAX_INPUTS:
        raise invalid("input", f"'input' may hold at most {MAX_INPUTS} items; got {len(value)}")
    first = value[0]
    if isinstance(first, int) and not isinstance(first, bool):
        _token_ids(value, "input")
        return value
    chars = ids = 0
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise invalid(f"input[{i}]", f"'input[{i}]' must be a non-empty string, like "
                              "the other items")
            chars += len(item)
    elif isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list) or not item:
                raise invalid(f"input[{i}]", f"'input[{i}]' must be a non-empty array of "
                              "token ids, like the other items")
            _token_ids(item, f"input[{i}]")
            ids += len(item)
    else:
        raise invalid("input[0]", "'input[0]' must be a string, a token id or an array of "
                      "token ids")
    if chars > MAX_CHARS or ids > MAX_TOKEN_IDS:
        raise invalid("input", f"'input' is too large: at most {MAX_CHARS} characters or "
                      f"{MAX_TOKEN_IDS} token ids in all")
    return value


def _token_ids(ids: list[Any], where: str) -> None:
    if len(ids) > MAX_TOKEN_IDS:
        raise invalid(where, f"'{where}' holds more than {MAX_TOKEN_IDS} token ids")
    for j, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_TOKEN_ID:
            raise invalid(f"{where}[{j}]", f"'{where}[{j}]' must be a token id: an integer "
                          f"between 0 and {MAX_TOKEN_ID}")


def prompt_preview(req: EmbeddingRequest) -> str:
    """What the row's prompt holds: the inputs' text, one a line, cut short; token
    arrays are described, not stored."""
    items = embedding_items(req.input)
    if isinstance(items[0], str):
        return "\n".join(items)[:PROMPT_CHARS]  # type: ignore[arg-type]
    return f"[{len(items)} token id array{'s' if len(items) > 1 else ''}]"
