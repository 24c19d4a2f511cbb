// app.js — the page shell of the p2pkube browser node.
//
// 1. Reads the join token from the URL fragment (#token=T: a fragment never reaches the web
//    server); without one, shows a form asking for it. Loading starts meanwhile.
// 2. Loads Pyodide (dist/manifest.json says where), the wheels (msgpack), the agent's Python
//    sources (a zip unpacked into the Pyodide file system and put on sys.path), and registers
//    the JS modules "yjs" (the yjs bundle) and "p2pjs" (bridge.js) for Python to import.
// 3. Runs `await p2pkube.browser.main.start(token, signaling_ws_url)`, then renders
//    `p2pkube.browser.main.snapshot()` (a JSON string) every 500 ms.
//
// 4. Registers the Service Worker (sw.js) that routes fetch() of Services' proxy paths from any
//    page of this origin through a tab's node, and shows a form to try one (bridge/proxy.js).
//
// 5. Once the node runs, a Cluster tab beside this node's own view: the cluster dashboard
//    (dashboard/view.mjs, the same view as a native agent's /dashboard/), fed by this tab's own
//    node through dashboard/source-bridge.js; loaded when the tab is first opened.
//
// For tests and the curious: window.p2pkubeCluster (the Cluster tab's mounted view, once opened), window.p2pkubeServiceWorker (resolves once the Service Worker
// controls the page; rejects saying why there is none), window.p2pkubeLoaded (resolves with the start-up timings once
// Python is loaded, before the node starts), window.p2pkubeReady (resolves when start()
// returned; rejects with the reason the node could not start), window.p2pkubeSnapshot() (the
// last snapshot, parsed, or null), window.p2pkube = {bridge, Y, pyodide, manifest, timings}.
import * as bridge from "./bridge.js";

const PY_DIR = "/home/pyodide/p2pkube-app";
const SNAPSHOT_MS = 500;
const MAX_LOG_LINES = 20;
const MAX_EVENTS = 30;

const t0 = performance.now();
const timings = {};
const app = { bridge, Y: null, pyodide: null, manifest: null, timings };
window.p2pkube = app;

let lastSnapshot = null;
window.p2pkubeSnapshot = () => lastSnapshot;

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a rejection is shown on the page; no "uncaught" noise
  return { promise, resolve, reject };
}
const loaded = deferred();
const ready = deferred();
window.p2pkubeLoaded = loaded.promise;
window.p2pkubeReady = ready.promise;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function step(name, started) {
  const ms = Math.round(performance.now() - started);
  timings[name] = ms;
  $("steps").append(el("li", {}, `${name} `, el("span", { class: "time" }, `${ms} ms`)));
  return ms;
}

function setStatus(text, kind) {
  const pill = $("status");
  pill.textContent = text;
  pill.className = `pill ${kind}`;
}

function showMessage(text, isError = false) {
  const box = $("message");
  box.hidden = false;
  box.className = isError ? "error" : "";
  box.textContent = text;
}

// -- the join token -------------------------------------------------------------------------------

function tokenFromHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  return token && token.trim() ? token.trim() : null;
}

function askForToken() {
  const existing = tokenFromHash();
  if (existing) return Promise.resolve(existing);
  const form = $("token-form");
  form.hidden = false;
  return new Promise((resolve) => {
    const done = (token) => {
      form.hidden = true;
      window.removeEventListener("hashchange", onHash);
      resolve(token);
    };
    const onHash = () => {
      const token = tokenFromHash();
      if (token) done(token);
    };
    window.addEventListener("hashchange", onHash);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      history.replaceState(null, "", `#token=${encodeURIComponent(token)}`);
      done(token);
    });
  });
}

// -- loading --------------------------------------------------------------------------------------

function versioned(manifest, path) {
  const entry = manifest.files[path];
  return entry ? `${path}?v=${entry.sha256.slice(0, 16)}` : path;
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Pyodide restored from the bundle's memory snapshot (build.py, web/snapshot.mjs: the started
 * interpreter with the standard library the agent imports, ~0.3 s instead of ~3 s of start-up),
 * or started from scratch when the bundle has none or the snapshot does not load (it is only a
 * shortcut: the page says why in the console and goes the long way).
 */
async function loadPyodideFast(loadPyodide, options, manifest) {
  const snapshot = manifest.pyodide.snapshot;
  if (snapshot && !new URLSearchParams(location.search).has("nosnapshot")) {
    try {
      const pyodide = await loadPyodide({ ...options, _loadSnapshot: fetchBytes(versioned(manifest, snapshot)) });
      timings.snapshot = true;
      return pyodide;
    } catch (error) {
      console.warn(`p2pkube: Pyodide's snapshot did not load (${error}); starting it from scratch`);
    }
  }
  return loadPyodide(options);
}

async function loadPython() {
  let started = performance.now();
  const response = await fetch("manifest.json", { cache: "no-cache" });
  if (!response.ok) throw new Error(`GET manifest.json: ${response.status} (is the bundle built? make browser)`);
  const manifest = await response.json();
  app.manifest = manifest;
  bridge.configure({ workerUrl: versioned(manifest, "worker.js"), ed25519Url: versioned(manifest, "ed25519.mjs") });
  step("manifest", started);

  started = performance.now();
  const zip = fetchBytes(versioned(manifest, manifest.python.zip));
  zip.catch(() => {});
  const yjs = import(`./${versioned(manifest, "yjs.mjs")}`);
  yjs.catch(() => {});
  const { loadPyodide } = await import(`./${manifest.pyodide.module}`);
  const options = {
    indexURL: new URL(manifest.pyodide.indexURL, location.href).href,
    stdout: (line) => console.log(`[python] ${line}`),
    stderr: (line) => console.warn(`[python] ${line}`),
  };
  const pyodide = await loadPyodideFast(loadPyodide, options, manifest);
  app.pyodide = pyodide;
  step(`Pyodide ${pyodide.version}${timings.snapshot ? " (from its snapshot)" : ""}`, started);

  started = performance.now();
  // loadPackage wants URLs ending in .whl: no ?v= here (a wheel's name carries its version).
  const wheels = manifest.wheels.map((path) => new URL(path, location.href).href);
  if (wheels.length) {
    await pyodide.loadPackage(wheels, { messageCallback: () => {}, errorCallback: (m) => console.error(m) });
  }
  step(`wheels (${manifest.wheels.map((w) => w.split("/").pop().split("-")[0]).join(", ")})`, started);

  started = performance.now();
  pyodide.unpackArchive(await zip, "zip", { extractDir: PY_DIR });
  pyodide.globals.set("_p2pkube_dir", PY_DIR);
  pyodide.runPython("import sys\nif _p2pkube_dir not in sys.path: sys.path.insert(0, _p2pkube_dir)\ndel _p2pkube_dir");
  app.Y = await yjs;
  pyodide.registerJsModule("yjs", app.Y);
  pyodide.registerJsModule("p2pjs", bridge);
  step("agent sources, yjs, bridge", started);
  timings.total = Math.round(performance.now() - t0);
  return pyodide;
}

// -- rendering ------------------------------------------------------------------------------------

const rendered = {};

function changed(key, value) {
  const text = JSON.stringify(value ?? null);
  if (rendered[key] === text) return false;
  rendered[key] = text;
  return true;
}

/** "2026-12-01T17:20:05Z" -> "17:20:05" (the whole instant is the cell's title). */
function shortTime(time) {
  const match = /T(\d\d:\d\d:\d\d)/.exec(String(time ?? ""));
  return match ? match[1] : String(time ?? "");
}

function shortId(id) {
  return id ? String(id).slice(0, 12) : "";
}

function stateClass(state) {
  const s = String(state || "").toLowerCase().split(/[^a-z]+/)[0]; // "Ready · linked" -> ready
  if (["ready", "running", "connected", "established", "succeeded", "normal"].includes(s)) return "ok";
  if (["failed", "notready", "error", "closed", "warning", "crashloopbackoff"].includes(s)) return "bad";
  return "warn";
}

let messageFromSnapshot = false;
let startFailed = false; // the start's own message stays: the snapshot poller must not replace it

function render(snap) {
  setStatus(snap.status || "unknown", snap.status === "running" ? "running" : snap.status === "error" ? "error" : "starting");
  if (startFailed) {
    // keep "The node could not start: ..." (the snapshot's error is the same, said less)
  } else if (snap.error) {
    showMessage(String(snap.error), true);
    messageFromSnapshot = true;
  } else if (messageFromSnapshot) {
    $("message").hidden = true;
    messageFromSnapshot = false;
  }

  const node = snap.node || {};
  if (changed("node", node)) {
    $("node-section").hidden = false;
    document.title = node.name ? `${node.name} · p2pkube` : "p2pkube node";
    $("node").replaceChildren(
      el("dt", {}, "name"), el("dd", {}, node.name ?? ""),
      el("dt", {}, "id"), el("dd", { class: "mono" }, node.id ?? ""),
      el("dt", {}, "kind"), el("dd", {}, node.kind ?? "browser"),
    );
  }

  const peers = snap.peers || [];
  if (changed("peers", peers)) {
    $("peers-section").hidden = false;
    $("peer-count").textContent = `(${peers.length})`;
    const rows = peers.map((p) =>
      el("tr", {}, el("td", {}, p.name ?? ""), el("td", { class: "mono", title: p.id ?? "" }, shortId(p.id)),
        el("td", { class: stateClass(p.state) }, p.state ?? "")),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: "3" }, "no peers yet")));
    $("peers").tBodies[0].replaceChildren(...rows);
    const natives = peers.filter((p) => p.kind === "native").map((p) => p.name);
    $("kubectl-hint").hidden = !natives.length;
    $("kubectl-nodes").textContent = natives.length === 1 ? natives[0] : `one of ${natives.join(", ")}`;
  }

  const pods = snap.pods || [];
  if (changed("pods", pods)) {
    $("pods-section").hidden = false;
    $("pod-count").textContent = `(${pods.length})`;
    const cards = pods.map((pod) => {
      const logs = (pod.logs || []).slice(-MAX_LOG_LINES);
      return el(
        "div", { class: "pod" },
        el("div", { class: "title" },
          el("strong", {}, `${pod.namespace ? `${pod.namespace}/` : ""}${pod.name ?? ""}`),
          el("span", { class: stateClass(pod.phase) }, pod.phase ?? "")),
        el("div", { class: "meta" },
          [pod.reason, pod.restarts ? `${pod.restarts} restart${pod.restarts === 1 ? "" : "s"}` : null].filter(Boolean).join(" · ") || "\u00a0"),
        logs.length ? el("pre", {}, logs.join("\n")) : el("div", { class: "empty" }, "no output"),
      );
    });
    $("pods").replaceChildren(...(cards.length ? cards : [el("div", { class: "empty" }, "no pods on this node")]));
  }

  const events = (snap.events || []).slice(-MAX_EVENTS).reverse();
  if (changed("events", events)) {
    $("events-section").hidden = false;
    const rows = events.map((e) =>
      el("tr", {}, el("td", { class: "mono", title: e.time ?? "" }, shortTime(e.time)),
        el("td", { class: stateClass(e.type) }, e.type ?? ""),
        el("td", {}, e.reason ?? ""), el("td", {}, e.object ?? ""), el("td", {}, e.message ?? "")),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: "5" }, "no events")));
    $("events").tBodies[0].replaceChildren(...rows);
  }
}

function pollSnapshots(module) {
  let failures = 0;
  const tick = () => {
    try {
      const text = module.snapshot();
      lastSnapshot = JSON.parse(String(text));
      render(lastSnapshot);
      failures = 0;
    } catch (e) {
      if (failures++ === 0) console.error("p2pkube: snapshot() failed:", e);
    }
  };
  tick();
  setInterval(tick, SNAPSHOT_MS);
}

// -- the Service Worker and the Services section ---------------------------------------------------

const serviceWorker = bridge.registerServiceWorker("sw.js");
serviceWorker.catch((e) => console.warn(`p2pkube: ${e.message || e}`));
window.p2pkubeServiceWorker = serviceWorker;

function showServices() {
  $("services-section").hidden = false;
  serviceWorker.then(
    (sw) =>
      ($("sw-state").textContent = sw.controlled
        ? "(Service Worker active)"
        : "(this page was hard-reloaded, so the Service Worker does not see its requests: reload it; other pages of this origin still go through this node)"),
    (e) => ($("sw-state").textContent = `(${e.message || e})`),
  );
  $("svc-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const method = $("svc-method").value;
    const init = { method };
    if (!["GET", "HEAD"].includes(method)) init.body = $("svc-body").value;
    const started = performance.now();
    $("svc-result").hidden = false;
    $("svc-status").textContent = "sending…";
    $("svc-headers").textContent = $("svc-response").textContent = $("svc-time").textContent = "";
    try {
      const response = await fetch($("svc-path").value.trim(), init);
      $("svc-status").textContent = `${response.status} ${response.statusText}`;
      $("svc-status").className = response.ok ? "ok" : "bad";
      $("svc-headers").textContent = [...response.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
      $("svc-response").textContent = await response.text();
    } catch (e) {
      $("svc-status").textContent = `failed: ${e.message || e}`;
      $("svc-status").className = "bad";
    }
    $("svc-time").textContent = `${Math.round(performance.now() - started)} ms`;
  });
}

// -- the Cluster tab -------------------------------------------------------------------------------

function showTabs(module) {
  $("tabs").hidden = false;
  let mounted = null;
  const select = async (cluster) => {
    $("tab-node").classList.toggle("active", !cluster);
    $("tab-cluster").classList.toggle("active", cluster);
    $("tab-node").setAttribute("aria-pressed", String(!cluster));
    $("tab-cluster").setAttribute("aria-pressed", String(cluster));
    $("node-view").hidden = cluster;
    $("cluster-view").hidden = !cluster;
    if (cluster && !mounted) {
      mounted = import(`./${versioned(app.manifest, "dashboard/view.mjs")}`).then((view) => {
        window.p2pkubeCluster = view.mountDashboard($("cluster-view"), view.bridgeSource(module));
        return window.p2pkubeCluster;
      });
      mounted.catch((e) => showMessage(`The cluster view could not load: ${e.message || e}`, true));
    }
    if (mounted && cluster) {
      const view = await mounted;
      view.cy.resize(); // drawn while hidden: measure again
      view.shown();
    }
  };
  $("tab-node").addEventListener("click", () => select(false));
  $("tab-cluster").addEventListener("click", () => select(true));
}

// -- start ----------------------------------------------------------------------------------------

async function main() {
  const tokenPromise = askForToken();
  let pyodide;
  try {
    pyodide = await loadPython();
    loaded.resolve({ ...timings });
  } catch (e) {
    console.error("p2pkube: loading failed:", e);
    setStatus("error", "error");
    showMessage(`Loading failed: ${e.message || e}`, true);
    loaded.reject(e);
    ready.reject(e);
    return;
  }
  let found;
  try {
    found = pyodide.runPython(
      "import importlib.util\n" +
        "try:\n    _found = importlib.util.find_spec('p2pkube.browser.main') is not None\n" +
        "except ModuleNotFoundError:\n    _found = False\n_found",
    );
  } catch (e) {
    found = false;
    console.error(e);
  }
  if (!found) {
    setStatus("not installed", "error");
    showMessage("node code not installed: the bundle has no p2pkube.browser.main module.", true);
    ready.reject(new Error("node code not installed"));
    return;
  }

  const token = await tokenPromise;
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const started = performance.now();
  setStatus("starting", "starting");
  try {
    const module = pyodide.pyimport("p2pkube.browser.main");
    pollSnapshots(module);
    pyodide.globals.set("_p2pkube_token", token);
    pyodide.globals.set("_p2pkube_ws", wsUrl);
    await pyodide.runPythonAsync(
      "import p2pkube.browser.main as _p2pkube_main\n" +
        "try:\n    await _p2pkube_main.start(_p2pkube_token, _p2pkube_ws)\n" +
        "finally:\n    del _p2pkube_token, _p2pkube_ws",
    );
    step("node started", started);
    showServices();
    showTabs(module);
    ready.resolve({ ...timings });
    window.addEventListener("hashchange", () => {
      const next = tokenFromHash();
      if (next && next !== token) location.reload(); // another cluster: start afresh
    });
  } catch (e) {
    console.error("p2pkube: start failed:", e);
    startFailed = true;
    setStatus("error", "error");
    showMessage(`The node could not start: ${e.message || e}`, true);
    ready.reject(e);
  }
}

main();
