/**
 * The live board: subscribe with LiveEvents, and on each invalidation re-fetch
 * the JSON view it concerns (invalidate, then fetch). Every URL comes from the
 * page's "live-config" (rendered with reverse()), so the site works under any
 * sub-path.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("live-config").textContent);
  const live = LiveEvents.config(); // rendered by {% live_events %}
  const byId = (id) => document.getElementById(id);
  const status = { connects: 0, resets: 0, fetches: 0, received: 0 };

  /** Wrap an async loader so calls while it runs coalesce into one more run. */
  function coalescing(load) {
    let running = null;
    let again = false;
    return function refresh() {
      if (running) {
        again = true;
        return running;
      }
      running = (async () => {
        do {
          again = false;
          try {
            await load();
          } catch (error) {
            console.error(error);
          }
        } while (again);
        running = null;
      })();
      return running;
    };
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      throw new Error(`${url}: ${response.status}`);
    }
    status.fetches += 1;
    return response.json();
  }

  function changeText(change, withWho) {
    const verb = change.delta > 0 ? "raised" : "lowered";
    const item = document.createElement("li");
    if (withWho) {
      item.append(`${change.who} `);
    }
    const name = document.createElement("b");
    name.textContent = change.tracker;
    item.append(`${verb} `, name, ` to ${change.value}`);
    return item;
  }

  function renderChanges(list, changes, withWho) {
    list.replaceChildren(...changes.map((change) => changeText(change, withWho)));
    if (changes.length === 0 && withWho) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "Nothing yet.";
      list.append(empty);
    }
  }

  function renderBoard(board) {
    const items = document.querySelectorAll("#trackers [data-tracker]");
    if (items.length !== board.trackers.length) {
      window.location.reload(); // trackers were added or removed: rebuild the page
      return;
    }
    for (const tracker of board.trackers) {
      const item = document.querySelector(`#trackers [data-tracker="${CSS.escape(tracker.slug)}"]`);
      if (!item) {
        window.location.reload();
        return;
      }
      const value = item.querySelector(".value");
      if (value.textContent !== String(tracker.value)) {
        value.textContent = String(tracker.value);
        item.classList.remove("bumped");
        void item.offsetWidth; // restart the highlight animation
        item.classList.add("bumped");
      }
    }
    renderChanges(byId("recent"), board.recent, true);
  }

  function renderPrivate(mine) {
    const count = byId("my-count");
    if (!count || !mine.user) {
      return;
    }
    count.textContent = String(mine.count);
    renderChanges(byId("my-recent"), mine.recent, false);
  }

  const refreshBoard = coalescing(async () => renderBoard(await getJson(config.boardUrl)));
  const refreshPrivate = coalescing(async () => renderPrivate(await getJson(config.privateUrl)));

  function log(event) {
    const item = document.createElement("li");
    const time = new Date().toLocaleTimeString([], { hour12: false });
    const what = event.topic ? `${event.event} ${event.topic}` : event.event;
    const data = event.data === null || event.data === undefined ? "" : ` ${JSON.stringify(event.data)}`;
    item.textContent = `${time} ${what}${data}`;
    item.dataset.event = event.event;
    item.title = `id ${event.id}`;
    const list = byId("log");
    list.prepend(item);
    while (list.children.length > 12) {
      list.lastElementChild.remove();
    }
  }

  function onEvent(event) {
    status.received += 1;
    log(event);
    if (event.topic === "board") {
      refreshBoard();
    } else {
      refreshPrivate();
    }
  }

  function onReset(event) {
    status.resets += 1;
    log(event);
    refreshBoard();
    refreshPrivate();
  }

  // Each state as it is: "live" only once the stream's first event arrived,
  // "polling" while on the long-poll (e.g. a proxy held the stream back).
  const LABELS = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", polling: "polling" };

  function onStateChange(state) {
    if (state === "live") {
      status.connects += 1;
    }
    const badge = byId("connection");
    badge.dataset.state = state;
    badge.textContent = LABELS[state] || state;
    byId("transport").textContent = subscription && subscription.transport === "poll" ? "long-poll" : "SSE";
    if (state === "live") {
      byId("transport").title = "";
    }
    // All tabs of this browser share one connection: one of them holds it.
    // Not the leader says nothing by itself (this tab may still be waiting
    // for the lock, alone): another tab holds the stream only once this one
    // heard a state from it, i.e. left "connecting" without leading.
    byId("sharing").textContent =
      subscription && !subscription.leader && subscription.state !== "connecting" ? "shared with another tab" : "";
    document.body.dataset.connects = String(status.connects);
  }

  let subscription = null;
  subscription = LiveEvents.subscribe(live.streamUrl, live.topics, onEvent, {
    ...LiveEvents.optionsFrom(live),
    onReset,
    onStateChange,
    onMute: (info) => {
      // The stream opened but nothing came through (a buffering proxy?).
      status.mutes = info.mutes;
      byId("transport").title = `The stream stayed silent; long-polling, retrying it in ${Math.round(info.retryIn / 1000)} s`;
      document.body.dataset.mutes = String(info.mutes);
    },
  });
  onStateChange(subscription.state);

  // Change a tracker without leaving the page. The page does not update from
  // the answer: it waits for the invalidation, like every other open tab.
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.matches("#trackers form")) {
      return; // join and leave are plain form posts
    }
    event.preventDefault();
    const body = new FormData(form);
    if (event.submitter && event.submitter.name) {
      body.set(event.submitter.name, event.submitter.value);
    }
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        throw new Error(`${form.action}: ${response.status}`);
      }
    } catch (error) {
      console.error(error);
    }
  });

  // For people poking around in the console (and for the browser tests).
  window.demo = { subscription, status, refreshBoard, refreshPrivate };
})();
