// source-http.js — the dashboard's data source on a native agent: its local API over HTTP.
//
// Every call sends the bearer token in an Authorization header (never in a URL: the token came
// in the page's fragment, which no request carries). Watches are fetch() response bodies read
// as they stream (newline-delimited JSON, docs/api.md): one stream for all the kinds the view
// shows (/v1/watch/Node,Pod,...), so the page holds two or three connections, not one per kind.
// A stream that ends or fails is opened again after a backoff (0.5 s doubling to 10 s); the
// server then lists every object again, so the view starts over from onReset().
//
// The data-source interface (view.js uses only this; source-bridge.js implements it in a tab):
//   watch(kinds, {onReset(), onEvents([{type, object}]), onState(text, error?)}) -> close()
//   poll() -> Promise<the /v1/dashboard answer>
//   logs(namespace, pod, onText(text), onEnd(reason?)) -> close()
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10000;
const LOG_TAIL_LINES = 200;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function problem(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.message || response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// Split a stream of text into lines; the last, unfinished one waits for the next chunk.
async function* lines(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const parts = buffer.split("\n");
      buffer = parts.pop();
      yield parts;
    }
  } finally {
    reader.releaseLock();
  }
}

export function httpSource({ token, base = "" }) {
  const headers = { Authorization: `Bearer ${token}` };

  function watch(kinds, { onReset, onEvents, onState }) {
    let closed = false;
    let controller = null;
    (async () => {
      let delay = RETRY_FIRST_MS;
      while (!closed) {
        controller = new AbortController();
        try {
          const response = await fetch(`${base}/v1/watch/${kinds.join(",")}`, {
            headers,
            signal: controller.signal,
            cache: "no-store",
          });
          if (!response.ok) throw new Error(await problem(response));
          onReset();
          onState("live");
          delay = RETRY_FIRST_MS;
          for await (const batch of lines(response.body)) {
            const events = batch.filter((l) => l.trim()).map((l) => JSON.parse(l));
            const error = events.find((e) => e.type === "ERROR");
            onEvents(events.filter((e) => e.type !== "ERROR"));
            if (error) throw new Error(error.object?.message || "watch ended with an error");
          }
          onState("reconnecting", new Error("the watch ended"));
        } catch (error) {
          if (closed) return;
          onState("reconnecting", error);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    })();
    return () => {
      closed = true;
      controller?.abort();
    };
  }

  async function poll() {
    const response = await fetch(`${base}/v1/dashboard`, { headers, cache: "no-store" });
    if (!response.ok) throw new Error(await problem(response));
    return response.json();
  }

  function logs(namespace, pod, onText, onEnd) {
    const controller = new AbortController();
    const path = `/v1/pods/${encodeURIComponent(namespace)}/${encodeURIComponent(pod)}/log`;
    (async () => {
      try {
        const response = await fetch(`${base}${path}?follow=true&tailLines=${LOG_TAIL_LINES}`, {
          headers,
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          onEnd(await problem(response));
          return;
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          onText(value);
        }
        onEnd();
      } catch (error) {
        if (!controller.signal.aborted) onEnd(String(error.message || error));
      }
    })();
    return () => controller.abort();
  }

  return { watch, poll, logs };
}
