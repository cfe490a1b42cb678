"""``POST /v1/embeddings``: the request, the call and the answer."""
