// bridge.js — what the browser can do that Pyodide's Python cannot: the JavaScript half of the
// p2pkube browser node. app.js registers this module in Pyodide as `p2pjs`
// (`pyodide.registerJsModule("p2pjs", bridge)`), so the agent's Python does `import p2pjs`.
//
// Conventions (every function of every module below follows them; bridge/interop.js does it):
// * Every `async` function returns a Promise; Python awaits it (`await p2pjs.kvGet(...)`). A
//   rejection arrives in Python as a `JsException` whose message says what failed.
// * Bytes cross as Uint8Array. Arguments accept a Uint8Array, any ArrayBuffer(View), or a Python
//   bytes-like object passed straight from Python (a PyProxy with a buffer): it is copied at
//   once, so the Python object may change afterwards. Values handed to Python are fresh
//   Uint8Arrays (`.to_bytes()` in Python).
// * Callbacks and handler objects may be JS functions or Python callables. Python proxies are
//   copied (`PyProxy.copy()`) so they outlive the call that passed them (no `create_proxy`
//   needed) and destroyed when the object they belong to is finished. They are called
//   defensively: an exception (or a rejected Promise / failed coroutine) is logged with
//   console.error and never breaks the bridge. A handler object is a JS object, a Python
//   object with those attributes, or a Python dict (looked up with `.get(name)`); a missing
//   handler is skipped.
// * Option objects may be JS objects or Python dicts (converted with `toJs`).
//
// The bridge is one ES module per concern, each documenting its part of the API:
//   bridge/signaling.js   openSocket: the WebSocket to the signaling server
//   bridge/peer.js        newPeer: a WebRTC neighbour (RTCPeerConnection + data channel)
//   bridge/ed25519.js     ed25519Generate/Sign/Verify, cryptoInfo: WebCrypto, else @noble
//   bridge/aesgcm.js      aesGcmOpen: opens sealed Secret values (@noble/ciphers)
//   bridge/idb.js         kvGet/Put/PutMany/Delete/Keys/Clear, acquireNodeLock: IndexedDB
//   bridge/instances.js   compileModule, forgetModule, hasModule, startInstance, runtimeInfo,
//                         configurePool, poolInfo: pod instances in Web Workers (worker.js)
//                         from a warm pool, output through a ring
//   bridge/proxy.js       registerServiceWorker, serveServiceRequests, serviceWorkerInfo: the
//                         page's side of the Service Worker (sw.js) that routes fetch() of
//                         proxy paths into the cluster through this tab's node
//   bridge/interop.js     the conventions above (values crossing to and from Python)
// This file only wires them: it is the exact API Pyodide and app.js see, plus
//   configure({workerUrl, ed25519Url, ed25519})   app.js points the runtime at the
//       (cache-busted) worker.js and the Ed25519 fallback at ed25519.mjs; ed25519 forces an
//       implementation (see bridge/ed25519.js)
// `make browser` (p2pkube/browser/build.py, web/esbuild.config.mjs) bundles it with its modules
// into one dist/bridge.js, so the page loads the bridge in one request, as before the split.

import { configureEd25519 } from "./bridge/ed25519.js";
import { configureRuntime } from "./bridge/instances.js";
import { fromPython } from "./bridge/interop.js";

export { openSocket } from "./bridge/signaling.js";
export { newPeer } from "./bridge/peer.js";
export { registerServiceWorker, serveServiceRequests, serviceWorkerInfo } from "./bridge/proxy.js";
export { cryptoInfo, ed25519Generate, ed25519Sign, ed25519Verify } from "./bridge/ed25519.js";
export { aesGcmOpen } from "./bridge/aesgcm.js";
export { kvGet, kvPut, kvPutMany, kvDelete, kvKeys, kvClear, acquireNodeLock } from "./bridge/idb.js";
export {
  compileModule, configurePool, forgetModule, hasModule, poolInfo, runtimeInfo, startInstance,
} from "./bridge/instances.js";

/** app.js points at the cache-busted worker.js and ed25519.mjs before the first start. */
export function configure(options) {
  const o = fromPython(options) || {};
  configureRuntime(o);
  configureEd25519(o);
}
