// proxy.js — one job: the page's side of the Service Worker (../sw.js) that routes fetch() of
// kubectl's proxy paths (/api/v1/namespaces/NS/services|pods/NAME[:PORT]/proxy/PATH), from any
// page of this origin, into the cluster through a tab that is a node (conventions: ../bridge.js).
//
//   registerServiceWorker(url = "sw.js") -> Promise<{scope, controlled}>
//       registers the Service Worker with the page's directory as scope and waits until it
//       controls this page (it claims open pages when it activates); controlled: false for a
//       page loaded with a hard reload, which is never controlled: its own fetch() goes to the
//       server, while its node still serves the other pages of the origin. Rejects, saying why, where
//       there is none: an insecure context (plain http from a LAN address; localhost and
//       127.0.0.1 count as secure) or a browser without Service Workers.
//   serveServiceRequests(handler | null, maxBodyBytes = Infinity)
//       handler {open(method, url, headersJson, body: Uint8Array | null) -> Promise<json>,
//       read(id) -> Promise<Uint8Array | string>, close(id) -> Promise} (p2pkube/browser/proxy.py
//       TabProxy): this page's node answers the Service Worker's requests; null: it no longer
//       does (the Service Worker asks another page, or answers 503). A body over maxBodyBytes
//       (services.max_request_body_bytes) is answered 413 here, never copied into Python.
//   serviceWorkerInfo() -> {supported, registered, controlled, serving, requests}
//
// The protocol with sw.js, per request, over a MessageChannel the Service Worker opens
// ({type: "p2pkube-proxy", method, url, headers: [[k, v]], body: ArrayBuffer | null} with the
// port): the page answers {type: "accepted"} at once, or {type: "no-node", reason} when it runs
// no node; then {type: "head", status, reason, headers, endpoint, node} or {type: "error",
// status, message, retryAfter}. The body is pulled: for each {type: "pull"} one {type: "chunk",
// data}, then {type: "end"} (or {type: "broken", message}); {type: "cancel"} stops it.

import { errorText, pick, release, toBytes } from "./interop.js";

/** How long a page whose Service Worker is active waits to be claimed by it. */
const CLAIM_MS = 3000;

let handler = null; // {open, read, close}, kept Python proxies
let listening = false;
let registered = null;
const counts = { requests: 0, refused: 0 };

function listen() {
  if (listening || !("serviceWorker" in navigator)) return;
  listening = true;
  navigator.serviceWorker.addEventListener("message", onMessage);
  navigator.serviceWorker.startMessages();
}

export async function registerServiceWorker(url = "sw.js") {
  if (!globalThis.isSecureContext) {
    throw new Error("no Service Worker: this page is not a secure context (use https, or http://localhost / 127.0.0.1)");
  }
  if (!("serviceWorker" in navigator)) throw new Error("no Service Worker: this browser has none");
  listen();
  const registration = await navigator.serviceWorker.register(String(url), { scope: "./" });
  registered = registration;
  await navigator.serviceWorker.ready; // active: it claims the open pages as it activates
  if (!navigator.serviceWorker.controller) {
    // A page loaded with a hard reload (shift+reload) is never controlled; give a claim that
    // is under way its moment, then say so instead of waiting for ever.
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, CLAIM_MS);
      navigator.serviceWorker.addEventListener("controllerchange", () => resolve(clearTimeout(timer)), { once: true });
    });
  }
  return { scope: registration.scope, controlled: Boolean(navigator.serviceWorker.controller) };
}

export function serveServiceRequests(next, maxBodyBytes = Infinity) {
  const old = handler;
  handler =
    next == null
      ? null
      : { open: pick(next, "open"), read: pick(next, "read"), close: pick(next, "close"), maxBody: Number(maxBodyBytes) };
  if (old) for (const fn of Object.values(old)) release(fn);
  listen();
}

export function serviceWorkerInfo() {
  return {
    supported: "serviceWorker" in navigator && Boolean(globalThis.isSecureContext),
    registered: registered ? registered.scope : null,
    controlled: Boolean(navigator.serviceWorker && navigator.serviceWorker.controller),
    serving: handler != null,
    ...counts,
  };
}

function onMessage(event) {
  const msg = event.data;
  const port = event.ports && event.ports[0];
  if (!msg || msg.type !== "p2pkube-proxy" || !port) return;
  const h = handler;
  if (!h || !h.open) {
    counts.refused += 1;
    port.postMessage({ type: "no-node", reason: "this page runs no node" });
    port.close();
    return;
  }
  counts.requests += 1;
  port.postMessage({ type: "accepted" });
  serve(h, msg, port).catch((e) => {
    console.error("p2pjs: a Service Worker request failed:", e);
    port.postMessage({ type: "error", status: 500, message: `the tab failed: ${errorText(e)}` });
    port.close();
  });
}

async function serve(h, msg, port) {
  const size = msg.body == null ? 0 : msg.body.byteLength;
  if (size > h.maxBody) { // refused before it is copied into Python's heap
    port.postMessage({ type: "error", status: 413, message: `request body of ${size} bytes is over the ${h.maxBody} allowed` });
    port.close();
    return;
  }
  const body = msg.body == null ? undefined : new Uint8Array(msg.body); // undefined: Python's None
  const opened = JSON.parse(String(await h.open(String(msg.method), String(msg.url), JSON.stringify(msg.headers || []), body)));
  if (opened.error) {
    port.postMessage({ type: "error", ...opened.error });
    port.close();
    return;
  }
  const id = opened.id;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    port.onmessage = null;
    port.close();
  };
  port.onmessage = async (event) => {
    const m = event.data || {};
    if (done) return;
    if (m.type === "cancel") {
      finish();
      await h.close(id);
      return;
    }
    if (m.type !== "pull") return;
    let chunk;
    try {
      chunk = await h.read(id);
    } catch (e) {
      chunk = `response cut short: ${errorText(e)}`;
    }
    if (typeof chunk === "string") {
      port.postMessage({ type: "broken", message: chunk });
      finish();
    } else if (!chunk || chunk.length === 0) {
      port.postMessage({ type: "end" });
      finish();
    } else {
      const data = toBytes(chunk, "response chunk"); // a copy of its own: its buffer is transferred
      release(chunk);
      port.postMessage({ type: "chunk", data }, [data.buffer]);
    }
  };
  port.postMessage({ type: "head", status: opened.status, reason: opened.reason, headers: opened.headers, endpoint: opened.endpoint, node: opened.node });
}
