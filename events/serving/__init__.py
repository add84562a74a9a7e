"""ASGI plumbing: how the event endpoints are served (lean request handling, transport access, sync trips, shutdown per server)."""
