// view.js — the cluster dashboard's view: the mesh as a graph, nodes, workloads with their
// scheduler, pods by node (click one for its log, followed live), Services, and events.
//
// It knows nothing of where data comes from: mountDashboard(root, source) takes a data source
// (source-http.js on a native agent's page; source-bridge.js in a browser node's tab) with
//   watch(kinds, {onReset, onEvents, onState}) -> close()    objects, live (one stream)
//   poll() -> Promise<answer>        mesh nodes and links with RTT, leases, request counters,
//                                    endpoints (p2pkube/dashboard/meshview.py), every
//                                    answer.pollSeconds while the view is visible
//   logs(namespace, pod, onText, onEnd) -> close()            a pod's log, followed
// Bundled by esbuild with cytoscape into dist/dashboard/view.mjs (esbuild.config.mjs).
import cytoscape from "cytoscape";

export { bridgeSource } from "./source-bridge.js";
export { httpSource } from "./source-http.js";

export const WATCHED_KINDS = [
  "Node", "Pod", "Deployment", "ReplicaSet", "DaemonSet", "Job", "CronJob", "Service", "Event",
];
const WORKLOAD_KINDS = ["Deployment", "DaemonSet", "Job", "CronJob", "ReplicaSet"];
const MAX_EVENTS = 500;
const MAX_LOG_CHARS = 200_000;
const AGE_REFRESH_MS = 5000;
const KIND_LABEL = "p2pkube.io/kind";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function age(timestamp, now = Date.now()) {
  const then = Date.parse(timestamp || "");
  if (Number.isNaN(then)) return "";
  const s = Math.max(0, Math.floor((now - then) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const keyOf = (o) => `${o.kind}/${o.metadata?.namespace || ""}/${o.metadata?.name}`;

function readyCondition(node) {
  const c = (node.status?.conditions || []).find((x) => x.type === "Ready");
  return c ? { status: c.status, reason: c.reason || "" } : { status: "Unknown", reason: "" };
}

function restarts(pod) {
  return (pod.status?.containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
}

function podPhase(pod) {
  if (pod.metadata?.deletionTimestamp) return "Terminating";
  const waiting = (pod.status?.containerStatuses || []).find((c) => c.state?.waiting?.reason);
  return waiting?.state.waiting.reason || pod.status?.phase || "Pending";
}

const eventTime = (e) => e.lastTimestamp || e.eventTime || e.metadata?.creationTimestamp;

// desired / ready of one workload, as kubectl get shows them.
function counts(o) {
  const s = o.status || {};
  switch (o.kind) {
    case "Deployment":
    case "ReplicaSet":
      return [o.spec?.replicas ?? 1, s.readyReplicas || 0];
    case "DaemonSet":
      return [s.desiredNumberScheduled || 0, s.numberReady || 0];
    case "Job":
      return [o.spec?.completions ?? 1, s.succeeded || 0];
    case "CronJob":
      return [null, (s.active || []).length];
    default:
      return [null, null];
  }
}

const GRAPH_STYLE = [
  {
    selector: "node",
    style: {
      label: "data(label)", "text-valign": "bottom", "text-margin-y": 4, "font-size": 11,
      color: "#222", width: 26, height: 26, "background-color": "#3b7dd8",
      "border-width": 2, "border-color": "#1d4f91", shape: "round-rectangle",
    },
  },
  { selector: "node.browser", style: { shape: "ellipse", "background-color": "#e8912d", "border-color": "#a35d0c" } },
  { selector: "node.self", style: { "border-width": 5 } },
  { selector: "node.notready", style: { "background-color": "#bbb", "border-color": "#c0392b", "border-style": "dashed" } },
  {
    selector: "edge",
    style: {
      width: 2, "line-color": "#8a9bb0", label: "data(label)", "font-size": 9, color: "#445",
      "text-background-color": "#fff", "text-background-opacity": 0.8, "text-background-padding": 1,
      "curve-style": "straight",
    },
  },
  { selector: ".faded", style: { opacity: 0.2 } },
  { selector: "node.hl", style: { "border-color": "#111" } },
  { selector: "edge.hl", style: { width: 4, "line-color": "#1d4f91" } },
];

export function mountDashboard(root, source, { title = "p2pkube cluster" } = {}) {
  const store = new Map(); // kind/ns/name -> object (watched)
  const events = []; // newest last, at most MAX_EVENTS
  let answer = null; // the last poll answer
  let previous = null; // [time, serviceRequests] of the poll before, for rates
  const rates = {};
  let selected = null; // {namespace, name} of the pod whose log is shown
  let closeLog = null;
  let renderQueued = false;
  let graphNodeIds = "";

  // -- skeleton ----------------------------------------------------------------------------------
  const pill = el("span", { class: "pill", id: "dash-state" }, "connecting");
  const viewer = el("span", { class: "sub", id: "dash-viewer" });
  const graphBox = el("div", { id: "dash-graph", "aria-label": "mesh graph" });
  const hoverBox = el("div", { id: "dash-hover", class: "hint" }, "Hover a node to see its neighbours.");
  const nodesBody = el("tbody");
  const workloadsBody = el("tbody");
  const podsBox = el("div", { id: "dash-pods" });
  const servicesBody = el("tbody");
  const eventsBody = el("tbody");
  const filterText = el("input", { id: "dash-event-filter", placeholder: "filter events (reason, object, message)", spellcheck: "false" });
  const filterType = el("select", { id: "dash-event-type", "aria-label": "event type" },
    el("option", { value: "" }, "all types"), el("option", { value: "Normal" }, "Normal"),
    el("option", { value: "Warning" }, "Warning"));
  const logTitle = el("span", { id: "dash-log-title" });
  const logText = el("pre", { id: "dash-log", class: "mono" });
  const logBox = el("section", { id: "dash-log-section", hidden: true },
    el("h2", {}, "Log ", logTitle, " ",
      el("button", { type: "button", onclick: () => showLog(null) }, "close")), logText);
  const table = (id, headings, body) =>
    el("table", { id }, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), body);
  const counter = (id) => el("span", { class: "count", id });

  root.replaceChildren(
    el("header", { class: "dash-header" }, el("h1", {}, title, " ", viewer), pill),
    el("div", { class: "dash-grid" },
      el("section", { id: "dash-mesh-section" }, el("h2", {}, "Mesh ", counter("dash-link-count")),
        graphBox, hoverBox,
        el("p", { class: "hint legend" }, el("span", { class: "sw native" }), " native  ",
          el("span", { class: "sw browser" }), " browser  ", el("span", { class: "sw notready" }),
          " NotReady  · thick border: this node · edge labels: round trip")),
      el("section", { id: "dash-nodes-section" }, el("h2", {}, "Nodes ", counter("dash-node-count")),
        table("dash-nodes", ["name", "kind", "status", "pods", "age"], nodesBody)),
      el("section", { id: "dash-workloads-section" }, el("h2", {}, "Workloads ", counter("dash-workload-count")),
        table("dash-workloads", ["workload", "namespace", "ready", "scheduler", "epoch", "age"], workloadsBody)),
      el("section", { id: "dash-services-section" }, el("h2", {}, "Services ", counter("dash-service-count")),
        table("dash-services", ["service", "namespace", "type", "ports", "endpoints", "requests"], servicesBody)),
      el("section", { id: "dash-pods-section", class: "wide" }, el("h2", {}, "Pods by node ", counter("dash-pod-count")),
        el("p", { class: "hint" }, "Click a pod for its log, followed live."), podsBox),
      logBox,
      el("section", { id: "dash-events-section", class: "wide" }, el("h2", {}, "Events ", counter("dash-event-count")),
        el("div", { class: "filters" }, filterText, filterType),
        table("dash-events", ["age", "type", "reason", "object", "source", "message"], eventsBody)),
    ),
  );
  filterText.addEventListener("input", () => queueRender());
  filterType.addEventListener("change", () => queueRender());

  // -- the graph ---------------------------------------------------------------------------------
  const cy = cytoscape({
    container: graphBox, style: GRAPH_STYLE, minZoom: 0.3, maxZoom: 3,
    boxSelectionEnabled: false, autoungrabify: false,
  });
  cy.on("mouseover", "node", (e) => hover(e.target));
  cy.on("mouseout", "node", () => hover(null));
  cy.on("tap", "node", (e) => hover(e.target));

  function hover(node) {
    cy.elements().removeClass("faded hl");
    if (!node) {
      hoverBox.textContent = "Hover a node to see its neighbours.";
      return;
    }
    const hood = node.closedNeighborhood();
    cy.elements().not(hood).addClass("faded");
    hood.addClass("hl");
    const lines = node.connectedEdges().map((edge) => {
      const other = edge.source().id() === node.id() ? edge.target() : edge.source();
      return `${other.data("label")} (${edge.data("label") || "RTT not measured yet"})`;
    });
    hoverBox.replaceChildren(
      el("strong", {}, node.data("label")), ` ${node.data("kind") || "?"}, ${node.data("status")}. `,
      lines.length ? `Neighbours: ${lines.join(", ")}` : "No links.");
  }

  function renderGraph() {
    if (!answer) return;
    const ids = new Set(answer.nodes.map((n) => n.id));
    cy.batch(() => {
      cy.elements().forEach((e) => {
        const keep = e.isNode() ? ids.has(e.id())
          : answer.edges.some((x) => `${x.source}~${x.target}` === e.id());
        if (!keep) cy.remove(e);
      });
      for (const n of answer.nodes) {
        const data = {
          id: n.id, label: n.name, kind: n.kind,
          status: n.ready ? "Ready" : `NotReady (${n.reason})`,
        };
        const classes = [n.kind === "browser" ? "browser" : "native", n.ready ? "" : "notready",
          n.self ? "self" : ""].join(" ");
        const existing = cy.getElementById(n.id);
        if (existing.nonempty()) {
          existing.data(data);
          existing.classes(classes);
        } else {
          cy.add({ group: "nodes", data, classes });
        }
      }
      for (const e of answer.edges) {
        const id = `${e.source}~${e.target}`;
        const label = e.rttMs == null ? "" : `${e.rttMs < 10 ? e.rttMs.toFixed(1) : Math.round(e.rttMs)} ms`;
        const existing = cy.getElementById(id);
        if (existing.nonempty()) existing.data("label", label);
        else cy.add({ group: "edges", data: { id, source: e.source, target: e.target, label } });
      }
    });
    const nodeIds = [...ids].sort().join(",");
    if (nodeIds !== graphNodeIds) {
      graphNodeIds = nodeIds;
      cy.layout({ name: answer.nodes.length > 12 ? "cose" : "circle", animate: false, padding: 30 }).run();
    }
    root.querySelector("#dash-link-count").textContent = `${answer.edges.length} links`;
  }

  // -- tables ------------------------------------------------------------------------------------
  const objects = (kind) => [...store.values()].filter((o) => o.kind === kind);

  function renderNodes(now) {
    const pods = objects("Pod");
    const meshById = new Map((answer?.nodes || []).map((n) => [n.name, n]));
    const rows = objects("Node").sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).map((n) => {
      const name = n.metadata.name;
      const ready = readyCondition(n);
      const kind = n.metadata.labels?.[KIND_LABEL] || meshById.get(name)?.kind || "";
      const status = ready.status === "True" ? "Ready" : "NotReady";
      return el("tr", { "data-node": name, class: status === "Ready" ? "" : "bad" },
        el("td", {}, name, meshById.get(name)?.self ? el("span", { class: "tag" }, "this node") : null),
        el("td", {}, kind),
        el("td", { class: "status", title: ready.reason }, status, ready.reason && status !== "Ready" ? ` (${ready.reason})` : ""),
        el("td", {}, pods.filter((p) => p.spec?.nodeName === name).length),
        el("td", {}, age(n.metadata.creationTimestamp, now)));
    });
    nodesBody.replaceChildren(...rows);
    root.querySelector("#dash-node-count").textContent = rows.length;
  }

  function renderWorkloads(now) {
    const leases = new Map((answer?.leases || []).map((l) => [l.workload, l]));
    const rows = [];
    for (const kind of WORKLOAD_KINDS) {
      for (const o of objects(kind)) {
        if (kind === "ReplicaSet" && (o.metadata.ownerReferences || []).length) continue;
        const lease = leases.get(`${kind}/${o.metadata.namespace || ""}/${o.metadata.name}`);
        const [desired, ready] = counts(o);
        const ok = desired == null || ready >= desired;
        rows.push(el("tr", { "data-workload": `${kind}/${o.metadata.namespace}/${o.metadata.name}` },
          el("td", {}, `${kind.toLowerCase()}/${o.metadata.name}`),
          el("td", {}, o.metadata.namespace || ""),
          el("td", { class: `ready ${ok ? "" : "warn"}` }, desired == null ? `${ready} active` : `${ready}/${desired}`),
          el("td", { class: "scheduler" }, lease ? lease.holderName : "—"),
          el("td", { class: "epoch" }, lease ? lease.epoch : ""),
          el("td", {}, age(o.metadata.creationTimestamp, now))));
      }
    }
    workloadsBody.replaceChildren(...rows);
    root.querySelector("#dash-workload-count").textContent = rows.length;
  }

  function renderPods(now) {
    const byNode = new Map();
    for (const pod of objects("Pod")) {
      const node = pod.spec?.nodeName || "(unscheduled)";
      if (!byNode.has(node)) byNode.set(node, []);
      byNode.get(node).push(pod);
    }
    for (const n of objects("Node")) if (!byNode.has(n.metadata.name)) byNode.set(n.metadata.name, []);
    const groups = [...byNode.keys()].sort().map((node) => {
      const pods = byNode.get(node).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      return el("div", { class: "pod-group", "data-pod-node": node },
        el("h3", {}, node, " ", el("span", { class: "count" }, pods.length)),
        pods.length ? el("table", {}, el("thead", {}, el("tr", {}, ["pod", "namespace", "phase", "restarts", "age"].map((h) => el("th", {}, h)))),
          el("tbody", {}, pods.map((p) => {
            const phase = podPhase(p);
            const isSel = selected && selected.name === p.metadata.name && selected.namespace === p.metadata.namespace;
            return el("tr", {
              "data-pod": p.metadata.name, class: `clickable ${isSel ? "selected" : ""}`,
              onclick: () => showLog({ namespace: p.metadata.namespace || "default", name: p.metadata.name }),
            },
            el("td", {}, p.metadata.name), el("td", {}, p.metadata.namespace || ""),
            el("td", { class: `phase ${phase}` }, phase), el("td", {}, restarts(p)),
            el("td", {}, age(p.metadata.creationTimestamp, now)));
          }))) : el("p", { class: "hint" }, "no pods"));
    });
    podsBox.replaceChildren(...groups);
    root.querySelector("#dash-pod-count").textContent = objects("Pod").length;
  }

  function renderServices() {
    const endpoints = new Map((answer?.endpoints || []).map((e) => [`${e.metadata.namespace}/${e.metadata.name}`, e]));
    const rows = objects("Service").sort((a, b) => keyOf(a).localeCompare(keyOf(b))).map((s) => {
      const id = `${s.metadata.namespace || "default"}/${s.metadata.name}`;
      const subsets = endpoints.get(id)?.subsets || [];
      const ready = subsets.flatMap((x) => x.addresses || []);
      const notReady = subsets.flatMap((x) => x.notReadyAddresses || []);
      const ports = (s.spec?.ports || []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol || "TCP"}`).join(", ");
      const total = answer?.serviceRequests?.[id];
      const rate = rates[id];
      return el("tr", { "data-service": id },
        el("td", {}, s.metadata.name), el("td", {}, s.metadata.namespace || ""),
        el("td", {}, s.spec?.type || "ClusterIP"), el("td", {}, ports),
        el("td", { title: ready.map((a) => `${a.targetRef?.name} on ${a.nodeName}`).join("\n") },
          `${ready.length} ready`, notReady.length ? `, ${notReady.length} not ready` : "",
          ready.length ? el("div", { class: "hint" }, ready.map((a) => `${a.targetRef?.name}@${a.nodeName}`).join(", ")) : null),
        el("td", { class: "rate" }, total == null ? "0" : `${total}`, rate != null ? ` (${rate.toFixed(1)}/s)` : ""));
    });
    servicesBody.replaceChildren(...rows);
    root.querySelector("#dash-service-count").textContent = rows.length;
  }

  function renderEvents(now) {
    const text = filterText.value.trim().toLowerCase();
    const type = filterType.value;
    const shown = [];
    const sorted = events.map((e) => [Date.parse(eventTime(e)) || 0, e]).sort((x, y) => y[0] - x[0]);
    for (const [, e] of sorted) {
      const object = `${(e.involvedObject?.kind || "").toLowerCase()}/${e.involvedObject?.name || ""}`;
      const source = [e.source?.component, e.source?.host].filter(Boolean).join("/");
      if (type && e.type !== type) continue;
      if (text && !`${e.reason} ${object} ${e.message} ${source}`.toLowerCase().includes(text)) continue;
      shown.push(el("tr", { class: e.type === "Warning" ? "warn" : "" },
        el("td", {}, age(eventTime(e), now)),
        el("td", {}, e.type), el("td", {}, e.reason), el("td", {}, object), el("td", {}, source),
        el("td", {}, e.message)));
      if (shown.length >= 200) break;
    }
    eventsBody.replaceChildren(...shown);
    root.querySelector("#dash-event-count").textContent = `${shown.length} of ${events.length}`;
  }

  function render() {
    renderQueued = false;
    const now = Date.now();
    renderGraph();
    renderNodes(now);
    renderWorkloads(now);
    renderServices();
    renderPods(now);
    renderEvents(now);
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
    setTimeout(() => renderQueued && render(), 250); // rAF does not run in a hidden tab
  }

  // -- logs --------------------------------------------------------------------------------------
  function showLog(pod) {
    closeLog?.();
    closeLog = null;
    selected = pod;
    logBox.hidden = !pod;
    queueRender();
    if (!pod) return;
    logTitle.textContent = `${pod.namespace}/${pod.name} (following)`;
    logText.textContent = "";
    closeLog = source.logs(pod.namespace, pod.name, (text) => {
      const atBottom = logText.scrollTop + logText.clientHeight >= logText.scrollHeight - 4;
      logText.textContent = (logText.textContent + text).slice(-MAX_LOG_CHARS);
      if (atBottom) logText.scrollTop = logText.scrollHeight;
    }, (reason) => {
      logTitle.textContent = `${pod.namespace}/${pod.name} (${reason ? `ended: ${reason}` : "ended"})`;
    });
  }

  // -- data --------------------------------------------------------------------------------------
  const closeWatch = source.watch(WATCHED_KINDS, {
    onReset() {
      store.clear();
      events.length = 0;
      queueRender();
    },
    onEvents(batch) {
      for (const { type, object } of batch) {
        if (!object?.kind) continue;
        if (object.kind === "Event") {
          if (type === "DELETED") continue; // collected: the stream keeps what it saw
          const key = keyOf(object);
          const at = events.findIndex((e) => keyOf(e) === key);
          if (at >= 0) events.splice(at, 1);
          events.push(object);
          if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
        } else if (type === "DELETED") {
          store.delete(keyOf(object));
        } else {
          store.set(keyOf(object), object);
        }
      }
      queueRender();
    },
    onState(state, error) {
      pill.textContent = state === "live" ? "live" : `${state}${error ? `: ${error.message || error}` : ""}`;
      pill.className = `pill ${state === "live" ? "ready" : "starting"}`;
    },
  });

  let pollTimer = null;
  let stopped = false;
  // Nobody looks: a hidden page, or a hidden Cluster tab in a browser node's page.
  const unseen = () => document.hidden || root.closest("[hidden]") != null;
  async function poll() {
    pollTimer = null;
    let wait = 3;
    if (!unseen()) {
      try {
        answer = await source.poll();
        wait = answer.pollSeconds || wait;
        viewer.textContent = `seen from ${answer.node}`;
        const now = performance.now();
        if (previous) {
          const seconds = (now - previous[0]) / 1000;
          for (const [id, total] of Object.entries(answer.serviceRequests || {})) {
            rates[id] = Math.max(0, total - (previous[1][id] || 0)) / seconds;
          }
        }
        previous = [now, answer.serviceRequests || {}];
        queueRender();
      } catch (error) {
        pill.textContent = `poll failed: ${error.message || error}`;
        pill.className = "pill starting";
      }
    }
    if (!stopped) pollTimer = setTimeout(poll, wait * 1000);
  }
  poll();
  const onVisible = () => {
    if (!unseen() && pollTimer) {
      clearTimeout(pollTimer);
      poll();
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  const ageTimer = setInterval(() => !unseen() && queueRender(), AGE_REFRESH_MS);

  return {
    cy,
    store,
    events,
    answer: () => answer,
    /** Shown again (a browser node's Cluster tab selected): poll now, not at the next tick. */
    shown: onVisible,
    close() {
      stopped = true;
      closeWatch();
      closeLog?.();
      clearTimeout(pollTimer);
      clearInterval(ageTimer);
      document.removeEventListener("visibilitychange", onVisible);
      cy.destroy();
    },
  };
}
