/**
 * events/client.js: live invalidation events in the browser.
 *
 * Server-Sent Events (EventSource) with a long-poll fallback; no dependencies,
 * no build step (ES2017). Load it with a plain <script> tag; it defines
 * `window.LiveEvents` (or `module.exports` under CommonJS).
 *
 * API
 *
 *   const sub = LiveEvents.subscribe(streamUrl, topics, onEvent, options)
 *
 *   streamUrl  URL of the SSE endpoint. Render it in the page with
 *              {% url 'events:stream' %}, never hard-code it: then sub-paths
 *              (uvicorn --root-path) just work.
 *   topics     array of topic names, e.g. ["board", "user:42"].
 *   onEvent    function (event), event = {id, topic, event, data}: the same
 *              object whether it came over SSE or long-poll.
 *   options    (all optional)
 *     pollUrl          long-poll URL ({% url 'events:poll' %}); enables the fallback.
 *     lastEventId      resume after this id, e.g. the newest id rendered with the
 *                      page, so nothing published since the page was built is lost.
 *     token            a signed subscribe token (events.make_token), sent as ?token=.
 *     onReset(event)   the server lost track of what you missed: re-fetch
 *                      everything. Without it, onEvent gets the reset event.
 *     onStateChange(state, previous)
 *                      state is "connecting", "live" (stream open), "polling"
 *                      (long-poll fallback working), "reconnecting" (waiting to
 *                      retry after an error) or "closed" (unsubscribed or fatal).
 *     onError(error)   a fatal error (bad topic, forbidden: a 4xx on long-poll);
 *                      the subscription closes. Default: console.error.
 *     events           event names passed to onEvent (default ["invalidate"]).
 *     pollTimeout      ms after which a long-poll is aborted (default 30000: above
 *                      the server's 25 s, below nginx's 60 s proxy_read_timeout).
 *     minDelay, maxDelay  bounds in ms of the exponential backoff between
 *                      retries (default 1000 and 30000); each delay is jittered.
 *     fallbackAfter    failed stream attempts, before any stream ever worked,
 *                      after which it long-polls instead (default 3).
 *     streamRetryAfter ms of fallback long-polling after which it tries the
 *                      stream again (default 300000).
 *     stableAfter      ms a stream must stay open to count as working (default 5000).
 *
 *   sub.state          the current state (see onStateChange).
 *   sub.transport      "stream", "poll" or null.
 *   sub.lastEventId    id of the last event seen (resumes from it).
 *   sub.unsubscribe()  close the connection and stop for good.
 *
 * Example
 *
 *   const sub = LiveEvents.subscribe("/app/events/stream/", ["board"], refetchBoard, {
 *     pollUrl: "/app/events/poll/",
 *     onReset: refetchEverything,
 *     onStateChange: (state) => { badge.textContent = state; },
 *   });
 *
 * Behaviour
 *
 * - Resuming: every (re)connection sends the last id seen (`last_event_id` on
 *   the stream, `since` on long-poll); the server replays what was missed, or
 *   sends `reset`. Events at or before the last id are dropped (no duplicates).
 * - Reconnecting: the client owns reconnection. On any stream error it closes
 *   the EventSource and opens a new one after a delay that doubles with each
 *   consecutive failure, from minDelay up to maxDelay, with jitter (half the
 *   delay fixed, half random), so a server that is down is never hammered and
 *   clients do not come back all at once.
 * - Fallback: without EventSource, or when the stream keeps failing although
 *   it never worked (a proxy that breaks streaming), it long-polls. Each poll
 *   is aborted after pollTimeout; errors are retried with the same backoff,
 *   and a 503's Retry-After is honoured.
 */
(function (root, factory) {
  "use strict";
  const api = factory(root);
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.LiveEvents = api;
  }
})(typeof self !== "undefined" ? self : this, function (root) {
  "use strict";

  const DEFAULTS = {
    pollUrl: null,
    lastEventId: null,
    token: null,
    onReset: null,
    onStateChange: null,
    onError: null,
    events: ["invalidate"],
    pollTimeout: 30000,
    minDelay: 1000,
    maxDelay: 30000,
    fallbackAfter: 3,
    streamRetryAfter: 300000,
    stableAfter: 5000,
    withCredentials: false,
  };

  const RESET = "reset";

  /** Compare two ids "<ms>-<seq>": negative, zero or positive. */
  function compareIds(a, b) {
    const [aMs, aSeq] = a.split("-").map(Number);
    const [bMs, bSeq] = b.split("-").map(Number);
    return aMs !== bMs ? aMs - bMs : aSeq - bSeq;
  }

  /** Capped exponential backoff with "equal jitter": half fixed, half random. */
  function backoffDelay(failures, options) {
    const ceiling = Math.min(options.maxDelay, options.minDelay * Math.pow(2, Math.max(0, failures - 1)));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  function withParams(base, params) {
    const url = new URL(base, root.location ? root.location.href : undefined);
    for (const [name, value] of params) {
      url.searchParams.append(name, value);
    }
    return url.toString();
  }

  function report(error) {
    if (typeof root.reportError === "function") {
      root.reportError(error);
    } else if (typeof console !== "undefined") {
      console.error(error);
    }
  }

  class Subscription {
    constructor(streamUrl, topics, onEvent, options) {
      if (!Array.isArray(topics) || topics.length === 0) {
        throw new TypeError("LiveEvents.subscribe: topics must be a non-empty array of names");
      }
      if (typeof onEvent !== "function") {
        throw new TypeError("LiveEvents.subscribe: onEvent must be a function");
      }
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.streamUrl = streamUrl;
      this.topics = topics.slice();
      this.onEvent = onEvent;
      this.state = "connecting";
      this.transport = null;
      this.lastEventId = this.options.lastEventId || null;

      this._closed = false;
      this._source = null; // the current EventSource
      this._abort = null; // AbortController of the current long-poll
      this._timer = null; // pending retry
      this._streamFailures = 0; // consecutive failed stream attempts
      this._pollFailures = 0; // consecutive failed long-polls
      this._streamWorked = false; // has any stream delivered an event or stayed open?
      this._fallbackSince = null; // when the fallback to long-poll started

      const canStream = typeof root.EventSource === "function" && Boolean(streamUrl);
      if (canStream) {
        this._openStream();
      } else if (this.options.pollUrl) {
        this._startPolling();
      } else {
        throw new Error("LiveEvents.subscribe: EventSource is unavailable and no pollUrl was given");
      }
    }

    /** Close the connection and stop for good. */
    unsubscribe() {
      if (this._closed) {
        return;
      }
      this._closed = true;
      this._stopStream();
      if (this._abort) {
        this._abort.abort();
      }
      clearTimeout(this._timer);
      this._setState("closed");
    }

    // --- shared --------------------------------------------------------------

    _params() {
      const params = this.topics.map((topic) => ["topic", topic]);
      if (this.options.token) {
        params.push(["token", this.options.token]);
      }
      return params;
    }

    _setState(state) {
      if (state === this.state) {
        return;
      }
      const previous = this.state;
      this.state = state;
      this._call(this.options.onStateChange, state, previous);
    }

    _call(callback, ...args) {
      if (typeof callback !== "function") {
        return;
      }
      try {
        callback(...args);
      } catch (error) {
        report(error); // a failing page callback must not break the connection
      }
    }

    /** One event from either transport: {id, topic, event, data}. */
    _receive(event) {
      if (event.event === RESET) {
        // A reset carries the id to resume from, which may be older than ours
        // (our id was unknown to the server): always adopt it.
        if (event.id) {
          this.lastEventId = event.id;
        }
        this._call(this.options.onReset || this.onEvent, event);
        return;
      }
      if (event.id && this.lastEventId && compareIds(event.id, this.lastEventId) <= 0) {
        return; // already seen
      }
      if (event.id) {
        this.lastEventId = event.id;
      }
      if (this.options.events.indexOf(event.event) !== -1) {
        this._call(this.onEvent, event);
      }
    }

    _fail(error) {
      this._closed = true;
      this._stopStream();
      clearTimeout(this._timer);
      this._setState("closed");
      this._call(this.options.onError || report, error);
    }

    _retryLater(delay, action) {
      clearTimeout(this._timer);
      this._setState("reconnecting");
      this._timer = setTimeout(() => {
        if (!this._closed) {
          action();
        }
      }, delay);
    }

    // --- the SSE stream ------------------------------------------------------

    _openStream() {
      this.transport = "stream";
      const params = this._params();
      if (this.lastEventId) {
        // A new EventSource sends no Last-Event-ID header: pass the id in the query.
        params.push(["last_event_id", this.lastEventId]);
      }
      const source = new root.EventSource(withParams(this.streamUrl, params), {
        withCredentials: this.options.withCredentials,
      });
      this._source = source;
      let openedAt = 0;

      const worked = () => {
        this._streamWorked = true;
        this._streamFailures = 0;
        this._fallbackSince = null;
      };

      source.onopen = () => {
        if (source === this._source) {
          openedAt = Date.now();
          this._setState("live");
        }
      };
      const onMessage = (message) => {
        if (source !== this._source) {
          return;
        }
        worked();
        let body;
        try {
          body = JSON.parse(message.data);
        } catch (error) {
          report(error);
          return;
        }
        this._receive({ id: message.lastEventId || null, topic: body.topic, event: message.type, data: body.data });
      };
      for (const name of new Set(this.options.events.concat([RESET]))) {
        source.addEventListener(name, onMessage);
      }
      source.onerror = () => {
        if (source !== this._source) {
          return;
        }
        // Whether the browser would retry by itself (network error, end of
        // body) or has given up (non-200 status), the client takes over, so
        // every retry follows the same backoff and resumes from our last id.
        this._stopStream();
        if (openedAt && Date.now() - openedAt >= this.options.stableAfter) {
          worked();
        }
        this._streamFailures += 1;
        const keepsFailing = !this._streamWorked && this._streamFailures >= this.options.fallbackAfter;
        if (keepsFailing && this.options.pollUrl) {
          this._fallbackSince = Date.now();
          this._startPolling();
          return;
        }
        this._retryLater(backoffDelay(this._streamFailures, this.options), () => this._openStream());
      };
    }

    _stopStream() {
      if (this._source) {
        this._source.onopen = this._source.onerror = null;
        this._source.close();
        this._source = null;
      }
    }

    // --- the long-poll fallback ----------------------------------------------

    _startPolling() {
      this.transport = "poll";
      this._pollFailures = 0;
      this._pollLoop();
    }

    async _pollLoop() {
      const options = this.options;
      while (!this._closed) {
        const retryStream =
          this._fallbackSince !== null &&
          typeof root.EventSource === "function" &&
          Date.now() - this._fallbackSince >= options.streamRetryAfter;
        if (retryStream) {
          this._fallbackSince = null;
          this._openStream();
          return;
        }
        if (this._pollFailures === 0) {
          this._setState("polling");
        }
        const params = this._params();
        if (this.lastEventId) {
          params.push(["since", this.lastEventId]);
        }
        const started = Date.now();
        const outcome = await this._pollOnce(withParams(options.pollUrl, params));
        if (this._closed) {
          return;
        }
        if (outcome.fatal) {
          this._fail(outcome.fatal);
          return;
        }
        if (outcome.body) {
          this._pollFailures = 0;
          this._setState("polling");
          for (const event of outcome.body.events) {
            this._receive(event);
          }
          if (outcome.body.last_id) {
            this.lastEventId = outcome.body.last_id; // where the next poll continues
          }
          if (outcome.body.events.length === 0 && Date.now() - started < options.minDelay / 2) {
            // An empty answer that came back at once: a misconfigured server or
            // proxy. Do not spin.
            await this._pause(options.minDelay);
          }
          continue;
        }
        this._pollFailures += 1;
        const delay = Math.max(backoffDelay(this._pollFailures, options), outcome.retryAfter || 0);
        this._setState("reconnecting");
        await this._pause(delay);
      }
    }

    /** One long-poll: {body} on success, {fatal} on a 4xx, else {retryAfter}. */
    async _pollOnce(url) {
      const controller = typeof AbortController === "function" ? new AbortController() : null;
      this._abort = controller;
      const timer = controller ? setTimeout(() => controller.abort(), this.options.pollTimeout) : null;
      try {
        const response = await fetch(url, {
          signal: controller ? controller.signal : undefined,
          credentials: this.options.withCredentials ? "include" : "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
        let body = null;
        try {
          body = await response.json();
        } catch (error) {
          body = null;
        }
        if (response.ok && body && Array.isArray(body.events)) {
          return { body };
        }
        const status = response.status;
        if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
          const detail = body && body.error ? body.error : response.statusText;
          const error = new Error(`LiveEvents: ${status} from the long-poll endpoint: ${detail}`);
          error.status = status;
          error.code = body && body.code;
          return { fatal: error };
        }
        const retryAfter = Number(response.headers.get("Retry-After"));
        return { retryAfter: Number.isFinite(retryAfter) ? retryAfter * 1000 : 0 };
      } catch (error) {
        return { retryAfter: 0 }; // network error, dropped connection or our abort
      } finally {
        clearTimeout(timer);
        this._abort = null;
      }
    }

    _pause(delay) {
      return new Promise((resolve) => {
        clearTimeout(this._timer);
        this._timer = setTimeout(resolve, delay);
      });
    }
  }

  /** Subscribe to `topics`; see the API at the top of this file. */
  function subscribe(streamUrl, topics, onEvent, options) {
    return new Subscription(streamUrl, topics, onEvent, options);
  }

  return { subscribe, Subscription, compareIds, backoffDelay };
});
