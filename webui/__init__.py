"""The browser chat page: static files served by the gateway, no build step."""
