// source-bridge.js — the dashboard's data source in a browser node's tab: the tab's own node
// (the Python node in Pyodide, p2pkube/browser/clusterview.py through p2pkube.browser.main),
// with the interface source-http.js documents. Nothing leaves the tab: the node already holds
// the replicated state, the mesh and the pod logs (from other nodes over its mesh).
const RETRY_MS = 1000;

export function bridgeSource(module) {
  function watch(kinds, { onReset, onEvents, onState }) {
    let closed = false;
    let feed = null;
    const open = () => {
      if (closed) return;
      try {
        onReset();
        feed = module.dashboard_watch(kinds.join(","), (text, ended) => {
          if (closed) return;
          if (text) onEvents(JSON.parse(text));
          if (ended) {
            feed = null;
            onState("reconnecting", new Error("the watch ended"));
            setTimeout(open, RETRY_MS);
          }
        });
        onState("live");
      } catch (error) {
        onState("reconnecting", error);
        setTimeout(open, RETRY_MS);
      }
    };
    open();
    return () => {
      closed = true;
      if (feed != null) module.dashboard_close(feed);
    };
  }

  async function poll() {
    return JSON.parse(String(await module.dashboard_poll()));
  }

  function logs(namespace, pod, onText, onEnd) {
    let feed = null;
    try {
      feed = module.dashboard_logs(namespace, pod, (text, ended) => {
        if (ended) {
          feed = null;
          onEnd(text || undefined);
        } else if (text) {
          onText(text);
        }
      });
    } catch (error) {
      onEnd(String(error.message || error));
    }
    return () => {
      if (feed != null) module.dashboard_close(feed);
    };
  }

  return { watch, poll, logs };
}
