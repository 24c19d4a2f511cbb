// main.js — the native agent's dashboard page (/dashboard/ on its local API, opened with the URL
// `p2pkube dashboard` prints): reads the API token from the URL fragment (#token=T; a fragment
// never reaches a server or a log) and mounts the view on the agent's HTTP API (view.mjs, the
// bundle of view.js, source-http.js and cytoscape). window.p2pkubeDashboard is the mounted view
// (its graph, its objects), for tests and the curious.
import { httpSource, mountDashboard } from "./view.mjs";

const root = document.getElementById("dashboard");
const token = new URLSearchParams(location.hash.replace(/^#/, "")).get("token");
if (!token) {
  root.querySelector("#dash-message").textContent =
    "No API token in the URL. Open the URL that `p2pkube dashboard` prints " +
    "(it ends with #token=...).";
} else {
  window.p2pkubeDashboard = mountDashboard(root, httpSource({ token }));
}
