// signaling.js — one job: the WebSocket to the signaling server (conventions: ../bridge.js).
//
//   openSocket(url, onMessage(text), onClose(code, reason), timeoutMs = 10000) -> Promise<Socket>
//       A WebSocket. Resolves once open; rejects with a message if it cannot open (bad URL,
//       refused, closed before open, timeout). onMessage gets each text frame (binary frames
//       are dropped with a console warning). onClose is called once when an open socket closes
//       (whoever closed it), not when the open failed.
//   Socket.send(text) -> bool        false when the socket is not open (nothing queued)
//   Socket.close(code = 1000, reason = "")   codes other than 1000 and 3000-4999 become 1000
//   Socket.readyState -> 0 connecting, 1 open, 2 closing, 3 closed;  Socket.bufferedAmount

import { errorText, invoke, keep, release } from "./interop.js";

class Socket {
  constructor(ws) {
    this._ws = ws;
  }
  get readyState() {
    return this._ws.readyState;
  }
  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }
  get url() {
    return this._ws.url;
  }
  send(text) {
    if (this._ws.readyState !== WebSocket.OPEN) return false;
    try {
      this._ws.send(String(text));
      return true;
    } catch (e) {
      console.warn("p2pjs: WebSocket send failed:", e);
      return false;
    }
  }
  close(code = 1000, reason = "") {
    code = Number(code);
    if (!(code === 1000 || (code >= 3000 && code <= 4999))) code = 1000;
    reason = String(reason ?? "");
    while (new TextEncoder().encode(reason).length > 123) reason = reason.slice(0, -1);
    try {
      this._ws.close(code, reason);
    } catch (e) {
      console.warn("p2pjs: WebSocket close failed:", e);
    }
  }
}

export function openSocket(url, onMessage, onClose, timeoutMs = 10000) {
  const onMsg = keep(onMessage);
  const onCls = keep(onClose);
  const done = () => {
    release(onMsg);
    release(onCls);
  };
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(String(url));
    } catch (e) {
      done();
      reject(new Error(`cannot open a WebSocket to ${url}: ${errorText(e)}`));
      return;
    }
    let opened = false;
    let failed = false;
    const timer = setTimeout(() => {
      if (opened) return;
      failed = true;
      reject(new Error(`WebSocket to ${url}: not open after ${timeoutMs} ms`));
      try {
        ws.close();
      } catch (_) {
        // ignore
      }
    }, Number(timeoutMs));
    ws.onopen = () => {
      if (failed) return;
      opened = true;
      clearTimeout(timer);
      resolve(new Socket(ws));
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") invoke(onMsg, "onMessage", event.data);
      else console.warn("p2pjs: binary WebSocket frame dropped");
    };
    ws.onclose = (event) => {
      clearTimeout(timer);
      if (opened) {
        invoke(onCls, "onClose", event.code, event.reason);
      } else if (!failed) {
        failed = true;
        reject(
          new Error(`WebSocket to ${url} failed (close code ${event.code}${event.reason ? `: ${event.reason}` : ""})`),
        );
      }
      done();
    };
  });
}
