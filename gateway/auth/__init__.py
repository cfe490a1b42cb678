"""Authentication: API keys (programs), JWTs (the browser), passwords (bcrypt)."""
