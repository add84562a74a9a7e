"""A Channels site: websocket consumers and the event endpoints in one ASGI application (see docs/howto/channels.md)."""
