"""Provider plugins: each turns a canonical chat request into a stream of typed chunks."""
