// peer.js — one job: a WebRTC neighbour, one RTCPeerConnection and its one data channel, as
// p2pkube/net/link.py is natively (conventions: ../bridge.js).
//
//   newPeer(iceServersJson, handlers) -> Peer
//       iceServersJson: JSON text of a list of ICE server URLs ("stun:host:3478") or of
//       RTCIceServer objects ({urls, username, credential}); "" or "[]" for none.
//       handlers: {onOpen(), onMessage(Uint8Array | string), onClose(reason),
//       onConnectionState(state), onBufferedLow()}. The data channel is created at once:
//       label "p2pkube", negotiated, id 0, ordered, reliable, binaryType "arraybuffer",
//       bufferedAmountLowThreshold 256 KiB. onMessage gets a Uint8Array per binary message
//       and the string itself for a text message (a protocol violation the caller decides
//       about). onConnectionState gets every RTCPeerConnection.connectionState change
//       ("new", "connecting", "connected", "disconnected", "failed", "closed"). onClose is
//       called once, when the channel closes or the connection fails; not after close().
//   Peer.createOffer() -> Promise<sdp>     setLocalDescription, waits for ICE gathering to be
//       complete (no trickle: the SDP carries every candidate, like aiortc), returns the SDP.
//   Peer.acceptOffer(sdp) -> Promise<answerSdp>   the same for a remote offer.
//   Peer.acceptAnswer(sdp) -> Promise<void>
//   Peer.send(bytes) -> bool         false when the channel is not open or the send failed
//   Peer.bufferedAmount() -> number  bytes queued on the channel
//   Peer.setBufferedLowThreshold(n)  when onBufferedLow fires (bufferedAmount fell to n)
//   Peer.channelState() -> "connecting" | "open" | "closing" | "closed"
//   Peer.connectionState() -> RTCPeerConnection.connectionState
//   Peer.localSdp() / Peer.remoteSdp() -> string ("" before there is one)
//   Peer.close()                     closes channel and connection; no callback after it
//   Peer.stats() -> Promise<JSON text> {connectionState, iceConnectionState, channel:
//       {state, bufferedAmount, messagesSent, messagesReceived, bytesSent, bytesReceived},
//       selected: null | {state, rttMs, bytesSent, bytesReceived, local: {type, address, port,
//       protocol}, remote: {...}}}

import { errorText, fromPython, invoke, pick, release, toBytes } from "./interop.js";

const LOW_THRESHOLD = 256 * 1024;
const GATHER_TIMEOUT_MS = 10000;

function parseIceServers(json) {
  if (json == null || json === "") return [];
  const list = typeof json === "string" ? JSON.parse(json) : fromPython(json);
  if (!Array.isArray(list)) throw new TypeError("iceServersJson must be a JSON list");
  return list.map((item) => (typeof item === "string" ? { urls: item } : item));
}

class Peer {
  constructor(iceServers, handlers) {
    this._h = {
      onOpen: pick(handlers, "onOpen"),
      onMessage: pick(handlers, "onMessage"),
      onClose: pick(handlers, "onClose"),
      onConnectionState: pick(handlers, "onConnectionState"),
      onBufferedLow: pick(handlers, "onBufferedLow"),
    };
    this._closed = false;
    this.pc = new RTCPeerConnection({ iceServers });
    const channel = this.pc.createDataChannel("p2pkube", { negotiated: true, id: 0, ordered: true });
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_THRESHOLD;
    this.channel = channel;
    channel.onopen = () => !this._closed && invoke(this._h.onOpen, "onOpen");
    channel.onmessage = (event) => {
      if (this._closed) return;
      const data = event.data;
      invoke(this._h.onMessage, "onMessage", typeof data === "string" ? data : new Uint8Array(data));
    };
    channel.onbufferedamountlow = () => !this._closed && invoke(this._h.onBufferedLow, "onBufferedLow");
    channel.onclose = () => this._ended("data channel closed");
    channel.onerror = (event) => {
      const e = event && event.error;
      if (this._closed || !e) return;
      const detail = [e.errorDetail, e.sctpCauseCode != null ? `SCTP cause ${e.sctpCauseCode}` : null, e.message];
      console.warn(`p2pjs: data channel error: ${detail.filter(Boolean).join(", ")}`);
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (this._closed) return;
      invoke(this._h.onConnectionState, "onConnectionState", state);
      if (state === "failed" || state === "closed") this._ended(`connection ${state}`);
    };
  }

  _ended(reason) {
    if (this._closed) return;
    this._closed = true;
    invoke(this._h.onClose, "onClose", reason);
    this._release();
  }

  _release() {
    for (const fn of Object.values(this._h)) release(fn);
    this._h = {};
  }

  _gathered(timeoutMs = GATHER_TIMEOUT_MS) {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve();
      };
      const check = () => pc.iceGatheringState === "complete" && finish();
      const onCandidate = (event) => event.candidate == null && finish();
      const timer = setTimeout(() => {
        console.warn(`p2pjs: ICE gathering not complete after ${timeoutMs} ms; using what there is`);
        finish();
      }, timeoutMs);
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  async createOffer() {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    await this._gathered();
    return this.pc.localDescription.sdp;
  }

  async acceptOffer(sdp) {
    await this.pc.setRemoteDescription({ type: "offer", sdp: String(sdp) });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this._gathered();
    return this.pc.localDescription.sdp;
  }

  async acceptAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp: String(sdp) });
  }

  send(data) {
    if (this._closed || this.channel.readyState !== "open") return false;
    try {
      this.channel.send(toBytes(data, "Peer.send"));
      return true;
    } catch (e) {
      console.warn("p2pjs: data channel send failed:", errorText(e));
      return false;
    }
  }

  bufferedAmount() {
    return this.channel.bufferedAmount;
  }

  setBufferedLowThreshold(bytes) {
    this.channel.bufferedAmountLowThreshold = Math.max(0, Number(bytes) | 0);
  }

  channelState() {
    return this.channel.readyState;
  }

  connectionState() {
    return this.pc.connectionState;
  }

  localSdp() {
    return this.pc.localDescription ? this.pc.localDescription.sdp : "";
  }

  remoteSdp() {
    return this.pc.remoteDescription ? this.pc.remoteDescription.sdp : "";
  }

  close() {
    const wasClosed = this._closed;
    this._closed = true;
    try {
      this.channel.close();
    } catch (_) {
      // ignore
    }
    try {
      this.pc.close();
    } catch (_) {
      // ignore
    }
    if (!wasClosed) this._release();
  }

  async stats() {
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pair = null;
    for (const s of byId.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) || pair;
    }
    if (!pair) {
      for (const s of byId.values()) {
        if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
      }
    }
    const candidate = (id) => {
      const c = byId.get(id);
      return c ? { type: c.candidateType, address: c.address ?? c.ip ?? null, port: c.port, protocol: c.protocol } : null;
    };
    let channel = { state: this.channel.readyState, bufferedAmount: this.channel.bufferedAmount };
    for (const s of byId.values()) {
      if (s.type === "data-channel" && s.dataChannelIdentifier === 0) {
        channel = {
          ...channel,
          messagesSent: s.messagesSent,
          messagesReceived: s.messagesReceived,
          bytesSent: s.bytesSent,
          bytesReceived: s.bytesReceived,
        };
      }
    }
    return JSON.stringify({
      connectionState: this.pc.connectionState,
      iceConnectionState: this.pc.iceConnectionState,
      channel,
      selected: pair
        ? {
            state: pair.state,
            rttMs: pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
            bytesSent: pair.bytesSent,
            bytesReceived: pair.bytesReceived,
            local: candidate(pair.localCandidateId),
            remote: candidate(pair.remoteCandidateId),
          }
        : null,
    });
  }
}

export function newPeer(iceServersJson, handlers) {
  return new Peer(parseIceServers(iceServersJson), handlers);
}
