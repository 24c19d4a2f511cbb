// sw.js — the p2pkube Service Worker: fetch() of kubectl's proxy paths
//
//   /api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH
//   /api/v1/namespaces/NS/pods/[http:]NAME[:PORT]/proxy/PATH
//
// from any page of this origin (the page itself, another tab, a link opened from it) goes into
// the cluster through a tab of this origin that is a node, as `kubectl proxy` does through the
// API server. Every other request goes to the network untouched (no respondWith).
//
// Registered by the node page (bridge/proxy.js registerServiceWorker, served by the signaling
// server from the web root, scope "/"). A Service Worker has no Pyodide and may be stopped when
// idle, so it keeps nothing: per request it asks the window clients of the origin in turn (the
// one that answered last first) over a MessageChannel; a page that runs a node answers
// "accepted" at once, one that does not answers "no-node", one without the bridge (any other
// page) not at all (ACCEPT_MS; a page that accepted a request before gets NODE_ACCEPT_MS, since
// its main thread, which runs the node too, may be busy). Then the node page answers with the
// head and streams the body, one chunk per pull of the Response's ReadableStream (protocol:
// bridge/proxy.js).
//
// Answers of its own (text/plain): 503 with Retry-After when no page of the origin runs a node,
// 504 when the node page gave no head within HEAD_MS, 502 when it was closed first (a body
// already under way is cut short: the fetch's read rejects), the node's status (404 unknown Service,
// 503 no ready endpoint, 502/504 handler failures) with its message otherwise.

const PROXY = /^\/api\/v1\/namespaces\/[^/]+\/(services|pods)\/[^/]+\/proxy(\/|$)/;
/** How long a page has to say whether it runs a node (it answers at once when it has the bridge). */
const ACCEPT_MS = 1000;
/**
 * How long a page that ran a node for an earlier request has to accept the next one. Its main
 * thread runs the node's Python too, and may be busy for seconds at a time (a loaded machine, a
 * large body being built): it is still the node to ask, not a page without the bridge. A closed
 * page is noticed within CLIENT_CHECK_MS all the same.
 */
const NODE_ACCEPT_MS = 10_000;
/** How long the node page may take to answer with a head (its router gives up at 30 s). */
const HEAD_MS = 40_000;
/** How long the node page may take to answer one pull of the body. */
const PULL_MS = 40_000;
/** How often a request waiting on a node page checks that the page is still open. */
const CLIENT_CHECK_MS = 1000;

let lastNode = null; // the id of the client that served the last request
/** Ids of the clients that accepted a request (forgotten when the worker is stopped). */
const nodePages = new Set();

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !PROXY.test(url.pathname)) return;
  event.respondWith(proxy(event.request));
});

function text(status, message, extra = {}) {
  return new Response(`${message}\n`, {
    status,
    headers: { "Content-Type": "text/plain; charset=utf-8", "X-P2pkube-Via": "service-worker", ...extra },
  });
}

/**
 * The next message on `port`, or null after `ms`, or as soon as the page `clientId` (when given)
 * is gone: a MessagePort says nothing when the page at its other end closes, so a request whose
 * node page was closed fails within CLIENT_CHECK_MS instead of at the timeout.
 */
function nextMessage(port, ms, clientId = null) {
  return new Promise((resolve) => {
    let check = null;
    const done = (value) => {
      clearTimeout(timer);
      clearInterval(check);
      port.onmessage = null;
      resolve(value);
    };
    const timer = setTimeout(() => done(null), ms);
    if (clientId) {
      check = setInterval(async () => {
        if (!(await self.clients.get(clientId))) done({ type: "gone", message: "the node page was closed" });
      }, CLIENT_CHECK_MS);
    }
    port.onmessage = (event) => done(event.data || {});
  });
}

async function candidates() {
  const all = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  all.sort((a, b) => (b.id === lastNode) - (a.id === lastNode));
  return all;
}

async function proxy(request) {
  const method = request.method;
  const body = method === "GET" || method === "HEAD" ? null : await request.arrayBuffer();
  const headers = [...request.headers.entries()];
  const reasons = [];
  for (const client of await candidates()) {
    const channel = new MessageChannel();
    const port = channel.port1;
    const message = { type: "p2pkube-proxy", method, url: request.url, headers, body: body ? body.slice(0) : null };
    client.postMessage(message, [channel.port2, ...(message.body ? [message.body] : [])]);
    const known = nodePages.has(client.id);
    const answer = await nextMessage(port, known ? NODE_ACCEPT_MS : ACCEPT_MS, known ? client.id : null);
    if (!answer || answer.type !== "accepted") {
      reasons.push(answer ? answer.reason || answer.message || answer.type : "no answer");
      if (answer) nodePages.delete(client.id); // it said no, or was closed
      port.close();
      continue;
    }
    nodePages.add(client.id);
    lastNode = client.id;
    return respond(port, method, client.id);
  }
  return text(
    503,
    "no p2pkube node page is open on this origin: open the node page (#token=...) in a tab, " +
      `let it join the cluster, then retry (${reasons.length} page(s) asked: ${reasons.join(", ") || "none open"})`,
    { "Retry-After": "1" },
  );
}

async function respond(port, method, clientId) {
  const head = await nextMessage(port, HEAD_MS, clientId);
  if (!head) {
    port.close();
    return text(504, "the node page gave no answer in time");
  }
  if (head.type === "gone") return text(502, `${head.message} before it answered`);
  if (head.type === "error") {
    const extra = head.retryAfter != null ? { "Retry-After": String(head.retryAfter) } : {};
    return text(head.status || 502, head.message || "request failed", extra);
  }
  if (head.type !== "head") return text(502, `unexpected answer from the node page: ${head.type}`);
  if (!(head.status >= 200 && head.status <= 599)) {
    port.postMessage({ type: "cancel" });
    port.close();
    return text(502, `the handler answered status ${head.status}, which a fetch() response cannot carry`);
  }
  const headers = new Headers();
  for (const [name, value] of head.headers || []) {
    try {
      headers.append(name, value);
    } catch (_) {
      // a name or value fetch refuses: left out, as a browser would
    }
  }
  if (head.endpoint) headers.set("X-P2pkube-Endpoint", head.endpoint);
  if (head.node) headers.set("X-P2pkube-Via", head.node);
  const empty = method === "HEAD" || [204, 205, 304].includes(head.status);
  const stream = empty ? null : bodyStream(port, clientId);
  if (empty) {
    port.postMessage({ type: "cancel" });
    port.close();
  }
  return new Response(stream, { status: head.status, statusText: head.reason || "", headers });
}

function bodyStream(port, clientId) {
  return new ReadableStream({
    async pull(controller) {
      port.postMessage({ type: "pull" });
      const m = await nextMessage(port, PULL_MS, clientId);
      if (m && m.type === "chunk") {
        controller.enqueue(new Uint8Array(m.data));
      } else if (m && m.type === "end") {
        port.close();
        controller.close();
      } else {
        port.close();
        controller.error(new Error(m ? m.message || m.type : "the node page stopped answering"));
      }
    },
    cancel() {
      port.postMessage({ type: "cancel" });
      port.close();
    },
  });
}
