// The live stream (GET /api/events): case events and device state pushed by the gateway. The browser's
// EventSource reconnects by itself after a blip and sends Last-Event-ID; when the stream is
// closed for good (the gateway restarted, a proxy gave up) we open a new one after the last
// event we saw, with a growing delay.

const listeners = new Set();
const deviceListeners = new Set();
const statusListeners = new Set();
let source = null;
let lastId = null;
let retryMs = 1000;
let timer = null;
let state = "off";

function setState(s) {
  state = s;
  statusListeners.forEach((f) => f(s));
}

export function liveState() {
  return state;
}

/** fn(event) for every case event; returns a function that stops listening. */
export function onCaseEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * fn(event) for every device state event (online, battery, sequence gaps, newest reading; at
 * most one per device per second); returns a function that stops listening.
 */
export function onDeviceEvent(fn) {
  deviceListeners.add(fn);
  return () => deviceListeners.delete(fn);
}

/** fn("live" | "connecting" | "off") when the connection changes. */
export function onLiveState(fn) {
  statusListeners.add(fn);
  fn(state);
  return () => statusListeners.delete(fn);
}

export function startLive() {
  stopLive();
  const url = lastId === null ? "/api/events" : `/api/events?after=${encodeURIComponent(lastId)}`;
  setState("connecting");
  source = new EventSource(url, { withCredentials: true });
  source.addEventListener("ready", (e) => {
    retryMs = 1000;
    try {
      const d = JSON.parse(e.data);
      if (lastId === null) lastId = d.after;
    } catch (_) {
      /* keep the old cursor */
    }
    setState("live");
  });
  source.addEventListener("case", (e) => {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    lastId = data.event_id;
    setState("live");
    listeners.forEach((f) => {
      try {
        f(data);
      } catch (err) {
        console.error(err);
      }
    });
  });
  source.addEventListener("device", (e) => {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    deviceListeners.forEach((f) => {
      try {
        f(data);
      } catch (err) {
        console.error(err);
      }
    });
  });
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      setState("off");
      source = null;
      timer = setTimeout(startLive, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    } else {
      setState("connecting");
    }
  };
}

export function stopLive() {
  if (timer) clearTimeout(timer);
  timer = null;
  if (source) source.close();
  source = null;
  setState("off");
}
