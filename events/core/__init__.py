"""The fan-out core: the per-process hub, its clients (subscribers), messages and their SSE frames.

Nothing here knows HTTP or which Redis backend is in use: the HTTP surface
(``events.http``) attaches subscribers to the hub, and a backend
(``events.backends``) feeds the hub the messages it reads from Redis.
"""
