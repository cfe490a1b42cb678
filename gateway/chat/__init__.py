"""The OpenAI chat-completions core: validation, routing, the call lifecycle, encoding."""
