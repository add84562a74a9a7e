/**
 * events/client.js: live invalidation events in the browser.
 *
 * Server-Sent Events (EventSource) with a long-poll fallback, one connection
 * per browser shared by all its tabs; no dependencies, no build step (ES2017).
 * Load it with a plain <script> tag (or `{% load events %}{% live_events %}`);
 * it defines `window.LiveEvents` (or `module.exports` under CommonJS).
 *
 * API
 *
 *   const sub = LiveEvents.subscribe(streamUrl, topics, onEvent, options)
 *
 *   streamUrl  URL of the SSE endpoint. Render it in the page with
 *              {% url 'events:stream' %} (or the {% live_events %} tag), never
 *              hard-code it: then sub-paths (uvicorn --root-path) just work.
 *   topics     array of topic names, e.g. ["board", "user:42"].
 *   onEvent    function (event), event = {id, topic, event, data}: the same
 *              object whether it came over SSE or long-poll.
 *   options    (all optional)
 *     pollUrl          long-poll URL ({% url 'events:poll' %}); enables the fallback.
 *     lastEventId      resume after this id, e.g. the newest id rendered with the
 *                      page, so nothing published since the page was built is lost.
 *     token            a signed subscribe token (events.make_token), sent as ?token=.
 *     refreshToken     where a fresh token comes from when the current one has
 *                      expired (a stream opened with a token ends at its expiry)
 *                      or was refused: a URL answering JSON {"token": "..."}
 *                      (fetched with the page's cookies), or a function returning
 *                      the token (or a promise of it). Fetched before reconnecting.
 *     share            share one connection with the other subscriptions of
 *                      this page and of the browser's other tabs (default true;
 *                      see "Sharing" below). false: a connection of its own.
 *     onReset(event)   the server lost track of what you missed: re-fetch
 *                      everything. Without it, onEvent gets the reset event.
 *     onStateChange(state, previous)
 *                      state is "connecting", "live" (the stream's first event
 *                      arrived: events flow), "polling" (on the long-poll, and
 *                      it answers), "reconnecting" (waiting to retry after an
 *                      error) or "closed" (unsubscribed or fatal).
 *     onMute(info)     a stream opened but nothing arrived within openTimeout
 *                      (a proxy holds its body back): it long-polls from the same
 *                      id instead and tries the stream again later (with backoff).
 *                      info = {openTimeout, retryIn, mutes}.
 *     openTimeout      ms a new stream has to deliver its first event (the
 *                      server's "open" event) before it counts as mute (default 5000).
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
 *     muteRetryAfter   ms of long-polling after a mute stream before the stream
 *                      is tried again; doubles after each mute one, up to
 *                      streamRetryAfter (default 30000).
 *
 *   sub.state          the current state of its connection (see onStateChange).
 *   sub.transport      "stream", "poll" or null.
 *   sub.lastEventId    id of the last event this subscription handled.
 *   sub.leader         true in the tab that holds the shared connection.
 *   sub.unsubscribe()  stop for good (the shared connection stays for the others).
 *
 *   LiveEvents.config(id)  the JSON config rendered by {% live_events %}
 *                      (element id, default "live-events"), or null.
 *   LiveEvents.optionsFrom(config)  the subscribe() options in such a config
 *                      (pollUrl, lastEventId, token, refreshToken, pollTimeout).
 *   LiveEvents.page    the subscription {% live_events %} made by itself
 *                      (when given topics and not subscribe=False), or null.
 *
 * Example
 *
 *   const sub = LiveEvents.subscribe("/app/events/stream/", ["board"], refetchBoard, {
 *     pollUrl: "/app/events/poll/",
 *     onReset: refetchEverything,
 *     onStateChange: (state) => { badge.textContent = state; },
 *   });
 *
 * DOM events (htmx)
 *
 *   Each event delivered to a page is also dispatched once on document.body as
 *   a bubbling CustomEvent named "live:<topic>" (a reset as "live:reset"),
 *   event.detail = the event object. With htmx:
 *   <div hx-get="/fragment/" hx-trigger="live:board from:body">.
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
 *   it never worked (a proxy that breaks streaming), it long-polls. A stream
 *   asks the server for an "open" event (open_event=1), which comes once its
 *   topics are subscribed: the state is "live" only then. A stream that opens
 *   but shows nothing within openTimeout (a proxy that buffers the body) is
 *   mute: it long-polls from the same id (nothing missed, nothing repeated) and
 *   retries the stream after muteRetryAfter, doubling each time it is mute. Each poll
 *   is aborted after pollTimeout; errors are retried with the same backoff,
 *   and a 503's Retry-After is honoured.
 * - Sharing: over HTTP/1.1 a browser opens at most 6 connections per host for
 *   all its tabs, so one stream per tab would block the 7th tab. Subscriptions
 *   with the same stream URL, poll URL, token and withCredentials share one
 *   connection: within a page directly; across tabs, one tab is the leader
 *   (it holds a Web Lock named after those; the browser releases it when the
 *   tab closes or crashes) and owns the only connection, on the union of
 *   every subscription's topics; the other tabs talk to it over a
 *   BroadcastChannel of the same name. A subscription bringing a topic the
 *   connection lacks, or an older id to resume from, makes the leader
 *   reconnect with the union from the oldest id needed (the server replays;
 *   each subscription drops the ids it already handled). When the leader goes
 *   away the next tab in the lock's queue takes over, asks every tab for its
 *   topics and last id, and resumes from the oldest of them. Without Web Locks
 *   or BroadcastChannel (or outside a secure context, where Web Locks do not
 *   exist) each page has its own connection.
 */
(function (root, factory) {
  "use strict";
  const api = factory(root);
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.LiveEvents = api;
    api._autoSubscribe();
  }
})(typeof self !== "undefined" ? self : this, function (root) {
  "use strict";

  const DEFAULTS = {
    pollUrl: null,
    lastEventId: null,
    token: null,
    share: true,
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
    refreshToken: null,
    onMute: null,
    openTimeout: 5000,
    muteRetryAfter: 30000,
  };

  const RESET = "reset";
  // The server's first event on a stream asked with open_event=1: events flow.
  const OPEN = "open";
  // Seconds before a token's expiry at which it counts as expired (clocks differ).
  const TOKEN_MARGIN = 15;
  // How long a new leader collects the other tabs' topics before connecting.
  const GATHER_MS = 150;
  // Subscriptions added within this many ms are joined in one reconnection.
  const JOIN_MS = 20;
  // Ids of the DOM events a page dispatched lately, so a replay dispatches none twice.
  const DOM_IDS_KEPT = 1000;

  /** Compare two positions [ms, seq]. */
  function comparePositions(a, b) {
    return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
  }

  /**
   * A composite id of a Redis Cluster deployment ("c<B>.<gg><d>[-<s>]...",
   * hex: see docs/reference/wire.md) as a Map group -> [ms, seq].
   */
  function parseComposite(id) {
    const [head, ...entries] = id.split(".");
    const base = parseInt(head.slice(1), 16);
    const positions = new Map();
    for (const entry of entries) {
      const [delta, seq] = entry.slice(2).split("-");
      positions.set(parseInt(entry.slice(0, 2), 16), [base - parseInt(delta, 16), seq ? parseInt(seq, 16) : 0]);
    }
    return positions;
  }

  function formatComposite(positions) {
    const groups = [...positions.keys()].sort((x, y) => x - y);
    const base = Math.max(...groups.map((group) => positions.get(group)[0]));
    const entries = groups.map((group) => {
      const [ms, seq] = positions.get(group);
      const entry = group.toString(16).padStart(2, "0") + (base - ms).toString(16);
      return seq ? entry + "-" + seq.toString(16) : entry;
    });
    return ["c" + base.toString(16), ...entries].join(".");
  }

  /**
   * Compare two ids: negative, zero or positive. Single-Redis ids "<ms>-<seq>"
   * are ordered; composite ids (Redis Cluster) compare on the slot groups both
   * name: positive if either is ahead in any of them, else negative if behind
   * in one, else zero.
   */
  function compareIds(a, b) {
    const aComposite = a.startsWith("c");
    if (aComposite !== b.startsWith("c")) {
      return 1; // ids from different kinds of deployment: never "already seen"
    }
    if (!aComposite) {
      const [aMs, aSeq] = a.split("-").map(Number);
      const [bMs, bSeq] = b.split("-").map(Number);
      return comparePositions([aMs, aSeq], [bMs, bSeq]);
    }
    const theirs = parseComposite(b);
    let behind = false;
    for (const [group, position] of parseComposite(a)) {
      const other = theirs.get(group);
      if (other !== undefined) {
        const order = comparePositions(position, other);
        if (order > 0) {
          return 1;
        }
        behind = behind || order < 0;
      }
    }
    return behind ? -1 : 0;
  }

  /** The older of two ids, where null means "unknown" and loses (composite ids: per slot group). */
  function olderId(a, b) {
    if (a === null) {
      return b;
    }
    if (b === null) {
      return a;
    }
    if (a.startsWith("c") && b.startsWith("c")) {
      const oldest = parseComposite(a);
      for (const [group, position] of parseComposite(b)) {
        const mine = oldest.get(group);
        if (mine === undefined || comparePositions(position, mine) < 0) {
          oldest.set(group, position);
        }
      }
      return formatComposite(oldest);
    }
    return compareIds(a, b) <= 0 ? a : b;
  }

  /** Capped exponential backoff with "equal jitter": half fixed, half random. */
  function backoffDelay(failures, options) {
    const ceiling = Math.min(options.maxDelay, options.minDelay * Math.pow(2, Math.max(0, failures - 1)));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  function absoluteUrl(url) {
    return new URL(url, root.location ? root.location.href : undefined).toString();
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

  function call(callback, ...args) {
    if (typeof callback !== "function") {
      return;
    }
    try {
      callback(...args);
    } catch (error) {
      report(error); // a failing page callback must not break the connection
    }
  }

  function isSubset(names, set) {
    return names.every((name) => set.has(name));
  }

  /**
   * One connection to the server: an EventSource, or the long-poll loop, on a
   * fixed set of topics. It owns reconnection, backoff and the fallback, and
   * hands every new event to `handlers.onEvent`.
   */
  class Connection {
    constructor(streamUrl, topics, eventNames, since, options, handlers) {
      this.streamUrl = streamUrl;
      this.topics = topics;
      this.eventNames = eventNames;
      this.options = options;
      this.handlers = handlers; // {onEvent, onState, onWorking, onFatal}
      this.state = "connecting";
      this.transport = null;
      this.lastEventId = since;

      this._closed = false;
      this._source = null; // the current EventSource
      this._abort = null; // AbortController of the current long-poll
      this._timer = null; // pending retry
      this._streamFailures = 0; // consecutive failed stream attempts
      this._pollFailures = 0; // consecutive failed long-polls
      this._streamWorked = false; // has any stream delivered an event or stayed open?
      this._fallbackSince = null; // when the fallback to long-poll started
      this._retryStreamAfter = options.streamRetryAfter; // ms of fallback before the stream is tried again
      this._mutes = 0; // consecutive streams that opened but stayed mute
      this._muteTimer = null;
      this.token = options.token || null; // replaced by refreshToken
      this._tokenExpires = null; // Unix seconds, from the stream's open event
      this._tokenRefused = false; // the last stream attempt may have been refused for its token
      this._pollTokenRetried = false; // a poll refused for its token got a fresh one

      if (typeof root.EventSource === "function" && Boolean(streamUrl)) {
        this._openStream();
      } else {
        this._startPolling();
      }
    }

    /** Close the connection and stop for good. */
    close() {
      if (this._closed) {
        return;
      }
      this._closed = true;
      this._stopStream();
      if (this._abort) {
        this._abort.abort();
      }
      clearTimeout(this._timer);
    }

    _params() {
      const params = this.topics.map((topic) => ["topic", topic]);
      if (this.token) {
        params.push(["token", this.token]);
      }
      return params;
    }

    /** Whether to fetch a new token before the next attempt. */
    _needsFreshToken() {
      if (!this.options.refreshToken || !this.token) {
        return false;
      }
      const expired = this._tokenExpires !== null && Date.now() >= (this._tokenExpires - TOKEN_MARGIN) * 1000;
      return expired || this._tokenRefused;
    }

    /** Get a fresh token from options.refreshToken; false if that failed. */
    async _refreshToken() {
      const source = this.options.refreshToken;
      try {
        let token;
        if (typeof source === "function") {
          token = await source();
        } else {
          const response = await fetch(source, {
            credentials: this.options.withCredentials ? "include" : "same-origin",
            cache: "no-store",
            headers: { Accept: "application/json" },
          });
          if (!response.ok) {
            throw new Error(`LiveEvents: ${response.status} from refreshToken ${source}`);
          }
          const body = await response.json();
          token = body && body.token;
        }
        if (typeof token !== "string" || !token) {
          throw new Error("LiveEvents: refreshToken gave no token");
        }
        this.token = token;
        this._tokenExpires = null;
        this._tokenRefused = false;
        return true;
      } catch (error) {
        report(error);
        return false;
      }
    }

    /** Open a stream, with a fresh token first if the current one expired or was refused. */
    async _reopenStream() {
      if (this._needsFreshToken()) {
        this._setState("reconnecting");
        const refreshed = await this._refreshToken();
        if (this._closed) {
          return;
        }
        if (!refreshed) {
          this._streamFailures += 1;
          this._retryLater(backoffDelay(this._streamFailures, this.options), () => this._reopenStream());
          return;
        }
      }
      this._openStream();
    }

    _setState(state) {
      if (state !== this.state) {
        this.state = state;
        this.handlers.onState(state, this.transport);
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
        this.handlers.onEvent(event);
        return;
      }
      if (event.id && this.lastEventId && compareIds(event.id, this.lastEventId) <= 0) {
        return; // already seen
      }
      if (event.id) {
        this.lastEventId = event.id;
      }
      this.handlers.onEvent(event);
    }

    _fail(error) {
      // The owner decides which subscriptions close: a shared connection's
      // other subscriptions may carry on without the refused topics.
      this.close();
      this.handlers.onFatal(error);
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
      // Ask for the "open" event: what tells a working stream from a mute one.
      params.push(["open_event", "1"]);
      if (this.state === "polling") {
        this._setState("connecting"); // trying the stream again: not polling any more
      }
      const source = new root.EventSource(withParams(this.streamUrl, params), {
        withCredentials: this.options.withCredentials,
      });
      this._source = source;
      let openedAt = 0;
      let flowing = false; // the open event (or any event) arrived
      clearTimeout(this._muteTimer);
      this._muteTimer = setTimeout(() => {
        if (source === this._source && !flowing) {
          this._onMute();
        }
      }, this.options.openTimeout);

      // The first event: the stream is subscribed and its bytes reach us.
      const flows = () => {
        if (flowing) {
          return;
        }
        flowing = true;
        clearTimeout(this._muteTimer);
        this._mutes = 0;
        this._tokenRefused = false;
        openedAt = Date.now();
        this._setState("live");
        this.handlers.onWorking();
      };

      const worked = () => {
        this._streamWorked = true;
        this._streamFailures = 0;
        this._fallbackSince = null;
      };

      // The response's head arrived: not yet "live" (a proxy may hold the body).
      source.onopen = null;
      source.addEventListener(OPEN, (message) => {
        // The browser's own "open" (an Event, no data) fires this listener too.
        if (source !== this._source || typeof message.data !== "string") {
          return;
        }
        let body = null;
        try {
          body = JSON.parse(message.data);
        } catch (error) {
          body = null;
        }
        const expires = body && body.data && body.data.token_expires;
        this._tokenExpires = typeof expires === "number" ? expires : null;
        if (message.lastEventId && this.lastEventId === null) {
          this.lastEventId = message.lastEventId; // where a stream without an id started
        }
        flows();
        worked(); // this stream gets through: no fallback for its next error
      });
      const onMessage = (message) => {
        if (source !== this._source) {
          return;
        }
        flows();
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
      for (const name of new Set(this.eventNames.concat([RESET]))) {
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
        // Refused before any event (a 403 looks like any error to EventSource):
        // the token may be why.
        this._tokenRefused = !flowing;
        this._streamFailures += 1;
        const keepsFailing = !this._streamWorked && this._streamFailures >= this.options.fallbackAfter;
        if (keepsFailing && this.options.pollUrl) {
          this._fallbackSince = Date.now();
          this._retryStreamAfter = this.options.streamRetryAfter;
          this._startPolling();
          return;
        }
        this._retryLater(backoffDelay(this._streamFailures, this.options), () => this._reopenStream());
      };
    }

    /** The stream opened but nothing came through: long-poll from the same id, retry the stream later. */
    _onMute() {
      this._stopStream();
      this._mutes += 1;
      const options = this.options;
      const ceiling = Math.min(options.streamRetryAfter, options.muteRetryAfter * Math.pow(2, this._mutes - 1));
      this._retryStreamAfter = ceiling / 2 + (Math.random() * ceiling) / 2;
      call(options.onMute, { openTimeout: options.openTimeout, retryIn: this._retryStreamAfter, mutes: this._mutes });
      if (options.pollUrl) {
        this._fallbackSince = Date.now();
        this._startPolling();
      } else {
        this._retryLater(this._retryStreamAfter, () => this._reopenStream());
      }
    }

    _stopStream() {
      clearTimeout(this._muteTimer);
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
          Date.now() - this._fallbackSince >= this._retryStreamAfter;
        if (retryStream) {
          this._fallbackSince = null;
          this._reopenStream();
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
          const tokenRefused = outcome.fatal.code === "invalid_token" && this.options.refreshToken && this.token;
          if (tokenRefused && !this._pollTokenRetried) {
            // Expired (or otherwise refused): fetch a fresh one and poll again, once.
            this._pollTokenRetried = true;
            if (await this._refreshToken()) {
              continue;
            }
          }
          this._fail(outcome.fatal);
          return;
        }
        if (outcome.body) {
          this._pollFailures = 0;
          this._pollTokenRetried = false;
          this._setState("polling");
          this.handlers.onWorking();
          for (const event of outcome.body.events) {
            this._receive(event);
            if (this._closed) {
              return;
            }
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

  let nextId = 0;
  function uniqueId() {
    nextId += 1;
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}-${nextId}`;
  }

  /**
   * What one page subscribed to: its own topics, event names and callbacks,
   * and the id of the last event it handled (it drops older ones). Made by
   * LiveEvents.subscribe(); read its properties at any time.
   *
   * @property {string} state  "connecting", "live" (stream open), "polling"
   *   (long-poll working), "reconnecting" (waiting to retry) or "closed".
   * @property {?string} transport  "stream", "poll" or null.
   * @property {?string} lastEventId  id of the last event this subscription handled.
   * @property {boolean} leader  true in the tab that holds the shared connection.
   * @example
   * const sub = LiveEvents.subscribe(streamUrl, ["board"], refetchBoard);
   * badge.textContent = sub.state;   // "connecting", then "live"
   * sub.unsubscribe();               // "closed"
   */
  class Subscription {
    constructor(streamUrl, topics, onEvent, options) {
      if (!Array.isArray(topics) || topics.length === 0) {
        throw new TypeError("LiveEvents.subscribe: topics must be a non-empty array of names");
      }
      if (typeof onEvent !== "function") {
        throw new TypeError("LiveEvents.subscribe: onEvent must be a function");
      }
      this.options = Object.assign({}, DEFAULTS, options || {});
      const canStream = typeof root.EventSource === "function" && Boolean(streamUrl);
      if (!canStream && !this.options.pollUrl) {
        throw new Error("LiveEvents.subscribe: EventSource is unavailable and no pollUrl was given");
      }
      this.id = uniqueId();
      this.streamUrl = streamUrl;
      this.topics = topics.slice();
      this.onEvent = onEvent;
      this.state = "connecting";
      this.transport = null;
      this.lastEventId = this.options.lastEventId || null;
      // False until the connection is known to bring every event after
      // lastEventId on our topics; until then events are ignored (the
      // connection will replay them).
      this._covered = false;
      this._closed = false;
      this._hub = hubFor(this);
      this._hub.add(this);
    }

    /**
     * Stop for good; a shared connection stays open for the other subscriptions.
     * The state becomes "closed" (onStateChange is called once more).
     *
     * @returns {void}
     * @example
     * window.addEventListener("pagehide", () => sub.unsubscribe());
     */
    unsubscribe() {
      if (this._closed) {
        return;
      }
      this._closed = true;
      this._hub.remove(this);
      this._setState("closed", this.transport);
    }

    /**
     * Whether this page holds the (shared) connection: false in the other tabs.
     *
     * @type {boolean}
     * @example
     * note.textContent = sub.leader ? "" : "shared with another tab";
     */
    get leader() {
      return !this._closed && this._hub.leader;
    }

    /** What the leader needs to know about this subscription. */
    _info() {
      return { id: this.id, topics: this.topics, events: this.options.events, pos: this.lastEventId };
    }

    _setState(state, transport) {
      this.transport = transport;
      if (state === this.state) {
        return;
      }
      const previous = this.state;
      this.state = state;
      call(this.options.onStateChange, state, previous);
    }

    /** An event of the shared connection; true when it was handed to the page. */
    _receive(event) {
      if (this._closed || !this._covered) {
        return false;
      }
      if (event.event === RESET) {
        if (event.id) {
          this.lastEventId = event.id;
        }
        call(this.options.onReset || this.onEvent, event);
        return true;
      }
      if (event.id && this.lastEventId && compareIds(event.id, this.lastEventId) <= 0) {
        return false; // already handled
      }
      if (event.id) {
        this.lastEventId = event.id; // covered: every event of the connection counts
      }
      if (this.topics.indexOf(event.topic) === -1 || this.options.events.indexOf(event.event) === -1) {
        return false;
      }
      call(this.onEvent, event);
      return true;
    }

    _fail(error) {
      if (this._closed) {
        return;
      }
      this._closed = true;
      this._hub.remove(this);
      this._setState("closed", this.transport);
      call(this.options.onError || report, error);
    }
  }

  /**
   * The subscriptions of one page that share a connection, and (when it is
   * the leader) that connection. Across tabs, hubs of the same name talk over
   * a BroadcastChannel; messages are {type, tab, ...}:
   *   hello {info}    a subscription (its topics, event names, last id)
   *   bye {ids}       subscriptions that ended
   *   leader          a new leader: send your hellos again
   *   covered {ids}   the connection now brings everything those need
   *   event {event}   an event of the connection
   *   state {state, transport}  the connection's state
   *   fail {ids, error}  the server refused those subscriptions' topics
   */
  class Hub {
    constructor(name, shared) {
      this.name = name;
      this.tab = uniqueId();
      this.local = new Map(); // id -> Subscription of this page
      this.state = "connecting";
      this.transport = null;
      this._domIds = new Set(); // ids recently dispatched as DOM events
      this._channel = null;
      this._lockAbort = null;
      this._releaseLock = null;
      // Leader only:
      this.leader = false;
      this._members = null; // id -> {id, topics, events, pos, tab, covered}
      this._connection = null;
      this._confirmed = new Set(); // topics of the last connection that worked
      this._gathering = false;
      this._joinTimer = null;
      this._onPageHide = () => this._leave();
      this._onPageShow = (event) => {
        if (event.persisted) {
          this._rejoin(); // back from the back/forward cache: the leader forgot us at pagehide
        }
      };

      if (shared) {
        this._channel = new root.BroadcastChannel(name);
        this._channel.onmessage = (message) => this._onMessage(message.data);
        this._lockAbort = new AbortController();
        root.navigator.locks
          .request(name, { signal: this._lockAbort.signal }, () => {
            if (this.local.size === 0) {
              return undefined; // granted after the page stopped subscribing: pass it on
            }
            this._becomeLeader();
            return new Promise((resolve) => {
              this._releaseLock = resolve;
            });
          })
          .catch(() => {}); // aborted: this page no longer subscribes
        root.addEventListener("pagehide", this._onPageHide);
        root.addEventListener("pageshow", this._onPageShow);
      } else {
        this._becomeLeader();
      }
    }

    add(sub) {
      this.local.set(sub.id, sub);
      sub._setState(this.state, this.transport);
      if (this.leader) {
        this._onHello(Object.assign({ tab: this.tab }, sub._info()));
      } else {
        this._post({ type: "hello", info: sub._info() });
      }
    }

    remove(sub) {
      if (!this.local.delete(sub.id)) {
        return;
      }
      if (this.leader) {
        this._members.delete(sub.id);
      } else {
        this._post({ type: "bye", ids: [sub.id] });
      }
      if (this.local.size === 0) {
        this._close();
      }
    }

    /** The page has no subscription left: close the connection or leave the group. */
    _close() {
      if (hubs.get(this.name) === this) {
        hubs.delete(this.name);
      }
      clearTimeout(this._joinTimer);
      if (this._connection) {
        this._connection.close();
        this._connection = null;
      }
      if (this._channel) {
        root.removeEventListener("pagehide", this._onPageHide);
        root.removeEventListener("pageshow", this._onPageShow);
        if (!this.leader) {
          this._lockAbort.abort();
        }
        this._channel.close();
      }
      if (this._releaseLock) {
        this._releaseLock(); // the next tab in the lock's queue takes over
      }
      this.leader = false;
    }

    /** The page goes away (closed, navigated): tell the leader, if it is another tab. */
    _leave() {
      if (!this.leader && this.local.size) {
        this._post({ type: "bye", ids: Array.from(this.local.keys()) });
      }
    }

    _post(message) {
      if (this._channel) {
        this._channel.postMessage(Object.assign({ tab: this.tab }, message));
      }
    }

    _onMessage(message) {
      if (!message || message.tab === this.tab) {
        return;
      }
      switch (message.type) {
        case "hello":
          if (this.leader) {
            this._onHello(Object.assign({ tab: message.tab }, message.info));
          }
          break;
        case "bye":
          if (this.leader) {
            for (const id of message.ids) {
              this._members.delete(id);
            }
          }
          break;
        case "leader":
          this._rejoin();
          break;
        case "covered":
          this._cover(message.ids);
          break;
        case "event":
          this._dispatch(message.event);
          break;
        case "state":
          this._setState(message.state, message.transport);
          break;
        case "fail":
          this._failLocal(message.ids, message.error);
          break;
      }
    }

    /**
     * Tell the leader (again) about every subscription of this page. Until it
     * says they are covered, they ignore events: it will replay those.
     */
    _rejoin() {
      if (this.leader) {
        return;
      }
      for (const sub of this.local.values()) {
        sub._covered = false;
        this._post({ type: "hello", info: sub._info() });
      }
    }

    _cover(ids) {
      for (const id of ids) {
        const sub = this.local.get(id);
        if (sub) {
          sub._covered = true;
        }
      }
    }

    _setState(state, transport) {
      this.state = state;
      this.transport = transport;
      for (const sub of Array.from(this.local.values())) {
        sub._setState(state, transport);
      }
    }

    /** Hand an event to this page's subscriptions, and once to the DOM. */
    _dispatch(event) {
      let delivered = false;
      for (const sub of Array.from(this.local.values())) {
        delivered = sub._receive(event) || delivered;
      }
      if (delivered) {
        this._domEvent(event);
      }
    }

    _domEvent(event) {
      const body = root.document && root.document.body;
      if (!body || typeof root.CustomEvent !== "function") {
        return;
      }
      if (event.id) {
        const key = `${event.event}:${event.id}`;
        if (this._domIds.has(key)) {
          return; // replayed for a subscription that came later: dispatched already
        }
        this._domIds.add(key);
        if (this._domIds.size > DOM_IDS_KEPT) {
          this._domIds.delete(this._domIds.values().next().value);
        }
      }
      const name = event.event === RESET ? "live:reset" : `live:${event.topic}`;
      body.dispatchEvent(new root.CustomEvent(name, { bubbles: true, detail: event }));
    }

    _failLocal(ids, error) {
      for (const id of ids) {
        const sub = this.local.get(id);
        if (sub) {
          const failure = new Error(error.message);
          failure.status = error.status;
          failure.code = error.code;
          sub._fail(failure);
        }
      }
    }

    // --- the leader ----------------------------------------------------------

    _becomeLeader() {
      this.leader = true;
      this._members = new Map();
      for (const sub of this.local.values()) {
        sub._covered = false;
        this._members.set(sub.id, Object.assign({ tab: this.tab, covered: false }, sub._info()));
      }
      if (this._channel) {
        // Collect every tab's subscriptions, then connect once for all.
        this._gathering = true;
        this._post({ type: "leader" });
        this._joinTimer = setTimeout(() => this._reconnect(), GATHER_MS);
      } else {
        this._reconnect();
      }
    }

    /** Whether the current connection brings everything `info` needs from now on. */
    _covers(info) {
      const connection = this._connection;
      if (!connection || !isSubset(info.topics, new Set(connection.topics))) {
        return false;
      }
      if (!isSubset(info.events, new Set(connection.eventNames))) {
        return false;
      }
      // Events after info.pos already handed out by this connection were not
      // seen by the new subscription: only a connection that has handed out
      // nothing newer covers it.
      const handedOut = connection.lastEventId;
      return info.pos === null || (handedOut !== null && compareIds(info.pos, handedOut) >= 0);
    }

    _onHello(info) {
      info.covered = false;
      this._members.set(info.id, info);
      if (this._gathering) {
        return;
      }
      if (this._covers(info)) {
        info.covered = true;
        this._announceCovered([info.id]);
        this._post({ type: "state", state: this.state, transport: this.transport });
      } else {
        // Join the subscriptions arriving together (tabs opened at once) in one reconnection.
        clearTimeout(this._joinTimer);
        this._joinTimer = setTimeout(() => this._reconnect(), JOIN_MS);
      }
    }

    _announceCovered(ids) {
      this._cover(ids);
      this._post({ type: "covered", ids });
    }

    /** (Re)connect on the union of every subscription, from the oldest id one needs. */
    _reconnect() {
      this._gathering = false;
      if (!this.leader || this._members.size === 0) {
        return;
      }
      const topics = new Set();
      const events = new Set();
      // Covered subscriptions have everything up to what the connection handed out.
      let since = this._connection ? this._connection.lastEventId : null;
      for (const info of this._members.values()) {
        info.topics.forEach((topic) => topics.add(topic));
        info.events.forEach((name) => events.add(name));
        if (!info.covered && info.pos !== null) {
          since = olderId(since, info.pos);
        }
      }
      if (this._connection) {
        this._connection.close();
      }
      // Said before the new connection can deliver anything (one sender's
      // messages arrive in order).
      const ids = Array.from(this._members.keys());
      for (const info of this._members.values()) {
        info.covered = true;
      }
      this._announceCovered(ids);
      // Timings and credentials: those of this page's first subscription.
      const first = this.local.values().next().value;
      const options = first.options;
      // Declared first: the handlers may run while the constructor starts a
      // long-poll, before `connection` is assigned (and then ignore it).
      let connection = null;
      connection = new Connection(
        first.streamUrl,
        Array.from(topics),
        Array.from(events),
        since,
        options,
        {
          onEvent: (event) => {
            if (connection === this._connection) {
              this._post({ type: "event", event });
              this._dispatch(event);
            }
          },
          onState: (state, transport) => {
            if (connection === this._connection) {
              this._post({ type: "state", state, transport });
              this._setState(state, transport);
            }
          },
          onWorking: () => {
            if (connection === this._connection) {
              this._confirmed = new Set(connection.topics);
            }
          },
          onFatal: (error) => {
            if (connection === this._connection) {
              this._onFatal(error);
            }
          },
        },
      );
      this._connection = connection;
      const state = connection.state;
      this._post({ type: "state", state, transport: connection.transport });
      this._setState(state, connection.transport);
    }

    /**
     * The server refused the connection's topics (a 4xx). When only topics
     * added since the connection last worked can be the cause, only the
     * subscriptions that brought them fail; the others reconnect without them.
     */
    _onFatal(error) {
      this._connection = null;
      const newcomers = [];
      for (const info of this._members.values()) {
        if (!isSubset(info.topics, this._confirmed)) {
          newcomers.push(info.id);
        }
      }
      const blameNewcomers = this._confirmed.size > 0 && newcomers.length < this._members.size;
      const failed = blameNewcomers ? newcomers : Array.from(this._members.keys());
      const detail = { message: error.message, status: error.status, code: error.code };
      for (const id of failed) {
        this._members.delete(id);
      }
      this._post({ type: "fail", ids: failed, error: detail });
      // Failing a local subscription may close this hub (no page subscription left).
      this._failLocal(failed, detail);
      if (this.leader && this._members.size > 0) {
        this._reconnect();
      }
    }
  }

  // The hub of each connection name in this page.
  const hubs = new Map();

  function canShareAcrossTabs() {
    return (
      root.isSecureContext === true &&
      typeof root.BroadcastChannel === "function" &&
      Boolean(root.navigator && root.navigator.locks && typeof root.navigator.locks.request === "function") &&
      typeof AbortController === "function"
    );
  }

  function hubFor(sub) {
    const options = sub.options;
    if (options.share === false) {
      return new Hub(null, false); // a connection of its own
    }
    const name =
      "live-events " +
      JSON.stringify([
        sub.streamUrl ? absoluteUrl(sub.streamUrl) : "",
        options.pollUrl ? absoluteUrl(options.pollUrl) : "",
        options.token || "",
        Boolean(options.withCredentials),
      ]);
    let hub = hubs.get(name);
    if (!hub) {
      hub = new Hub(name, canShareAcrossTabs());
      hubs.set(name, hub);
    }
    return hub;
  }

  /**
   * Subscribe to `topics`: call `onEvent` for each event on them, over SSE or
   * the long-poll fallback, resuming after every reconnection from the last id
   * seen. The options are listed in the API at the top of this file.
   *
   * @param {string} streamUrl  the SSE endpoint, rendered with {% url 'events:stream' %}.
   * @param {string[]} topics  topic names, e.g. ["board", "user:42"].
   * @param {function(Object)} onEvent  called with {id, topic, event, data}.
   * @param {Object} [options]  pollUrl, lastEventId, token, share, onReset,
   *   onStateChange, onError, events, pollTimeout, minDelay, maxDelay,
   *   fallbackAfter, streamRetryAfter, stableAfter, withCredentials.
   * @returns {Subscription}
   * @throws {TypeError} when topics is not a non-empty array or onEvent not a function.
   * @example
   * const sub = LiveEvents.subscribe("/events/stream/", ["board"], (event) => refetchBoard(), {
   *   pollUrl: "/events/poll/",
   *   onReset: () => refetchEverything(),
   *   onStateChange: (state) => { badge.textContent = state; },
   * });
   */
  function subscribe(streamUrl, topics, onEvent, options) {
    return new Subscription(streamUrl, topics, onEvent, options);
  }

  /**
   * The JSON config rendered by the {% live_events %} template tag, or null
   * when the page has no element with that id.
   *
   * @param {string} [id="live-events"]  the tag's element_id.
   * @returns {?{streamUrl: string, pollUrl: string, topics: string[],
   *   lastEventId: ?string, token: ?string, pollTimeout: number, subscribe: boolean}}
   * @example
   * const config = LiveEvents.config();   // {% live_events "board" subscribe=False %}
   * if (config) console.log(config.topics);   // ["board"]
   */
  function config(id) {
    const element = root.document && root.document.getElementById(id || "live-events");
    return element ? JSON.parse(element.textContent) : null;
  }

  /**
   * The subscribe() options a {% live_events %} config carries: pollUrl,
   * lastEventId, token and pollTimeout.
   *
   * @param {Object} settings  a config, as LiveEvents.config() returns it.
   * @returns {Object}
   * @example
   * const config = LiveEvents.config();
   * LiveEvents.subscribe(config.streamUrl, config.topics, onEvent, {
   *   ...LiveEvents.optionsFrom(config),
   *   onReset,
   * });
   */
  function optionsFrom(settings) {
    return {
      pollUrl: settings.pollUrl,
      lastEventId: settings.lastEventId,
      token: settings.token,
      refreshToken: settings.refreshToken || null,
      pollTimeout: settings.pollTimeout,
    };
  }

  const api = {
    subscribe,
    config,
    optionsFrom,
    /**
     * The subscription {% live_events %} made by itself (given topics, and not
     * subscribe=False), or null.
     *
     * @type {?Subscription}
     * @example
     * if (LiveEvents.page) LiveEvents.page.unsubscribe();
     */
    page: null,
    Subscription,
    compareIds,
    olderId,
    backoffDelay,
    // Called once when loaded by a <script> tag: {% live_events "topic" %}
    // subscribes by itself (the page then gets "live:<topic>" DOM events).
    _autoSubscribe() {
      const script = root.document && root.document.currentScript;
      const id = script && script.dataset && script.dataset.liveEvents;
      const settings = id ? config(id) : null;
      if (settings && settings.subscribe && settings.topics && settings.topics.length) {
        api.page = subscribe(settings.streamUrl, settings.topics, () => {}, optionsFrom(settings));
      }
    },
  };
  return api;
});
