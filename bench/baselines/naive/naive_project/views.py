"""The tutorial way: every client opens its own Redis pub/sub connection,
decodes every message and re-encodes its own SSE frame."""

import asyncio
import json

import redis.asyncio as aioredis
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse


def index(request):
    return HttpResponse("naive baseline\n")


def _channel(topic):
    return f"{settings.EVENTS_PREFIX}:{topic}"


async def stream(request):
    topics = request.GET.getlist("topic")
    if not topics:
        return JsonResponse({"error": "topic required"}, status=400)

    async def events():
        client = aioredis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(*[_channel(t) for t in topics])
            yield "retry: 1000\n: connected\n\n"
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=settings.EVENTS_HEARTBEAT)
                if msg is None:
                    yield ": ping\n\n"
                    continue
                topic = msg["channel"].decode().split(":", 1)[1]
                data = json.loads(msg["data"])
                yield f"event: invalidate\ndata: {json.dumps({'topic': topic, 'data': data})}\n\n"
        finally:
            await pubsub.aclose()
            await client.aclose()

    return StreamingHttpResponse(
        events(),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def poll(request):
    topics = request.GET.getlist("topic")
    if not topics:
        return JsonResponse({"error": "topic required"}, status=400)
    client = aioredis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(*[_channel(t) for t in topics])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.EVENTS_LONGPOLL_TIMEOUT
        while (left := deadline - loop.time()) > 0:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is not None:
                topic = msg["channel"].decode().split(":", 1)[1]
                ev = {"id": None, "topic": topic, "event": "invalidate", "data": json.loads(msg["data"])}
                return JsonResponse({"events": [ev], "last_id": None})
        return JsonResponse({"events": [], "last_id": None})
    finally:
        await pubsub.aclose()
        await client.aclose()
