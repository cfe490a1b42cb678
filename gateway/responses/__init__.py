"""``POST /v1/responses`` and its state: OpenAI's Responses API over every routed model."""
