// files.js — one job: the live copy of an instance's read-only directories (its configMap and
// secret volumes), the contract between the page's side of a pod instance (bridge/instances.js
// publishes each new version) and the pod's Worker (worker.js takes it at its next file
// lookup). Both import this module (esbuild bundles it into each), like ring.js.
//
// A Worker runs its module synchronously, so it cannot receive a message while it runs; the
// files travel in a SharedArrayBuffer instead (only when the page is crossOriginIsolated;
// otherwise an instance sees the files it started with). Layout: a header of FILES_HEADER_BYTES
// (Int32 slots F_VERSION, F_LENGTH), then the encoding of {guestPath: [[relativePath, bytes]]}:
// [count u32] then per file [guest u32 + utf-8][path u32 + utf-8][data u32 + bytes], all
// little-endian. F_VERSION is a sequence lock: odd while the page writes, even after; a reader
// takes a version only when it saw the same even number before and after copying.

export const FILES_HEADER_BYTES = 8;
export const F_VERSION = 0, F_LENGTH = 1;
/** Room for the files of an instance: twice what it started with, within these bounds. */
export const FILES_MIN_BYTES = 64 * 1024, FILES_MAX_BYTES = 4 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** {guestPath: [[relativePath, Uint8Array]]} -> its encoding (Uint8Array). */
export function encodeFiles(files) {
  const parts = [];
  let count = 0;
  for (const [guest, entries] of Object.entries(files)) {
    for (const [path, data] of entries) {
      parts.push(encoder.encode(guest), encoder.encode(path), data);
      count++;
    }
  }
  const out = new Uint8Array(4 + parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, count, true);
  let at = 4;
  for (const part of parts) {
    view.setUint32(at, part.length, true);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}

/** An encoding -> {guestPath: [[relativePath, Uint8Array]]}. */
export function decodeFiles(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const files = {};
  let at = 4;
  const take = () => {
    const length = view.getUint32(at, true);
    const part = bytes.slice(at + 4, at + 4 + length);
    at += 4 + length;
    return part;
  };
  for (let i = view.getUint32(0, true); i > 0; i--) {
    const guest = decoder.decode(take());
    const path = decoder.decode(take());
    (files[guest] ||= []).push([path, take()]);
  }
  return files;
}

/** A shared buffer sized for files first encoded as ``initial``. */
export function allocateFiles(initial) {
  const room = Math.min(FILES_MAX_BYTES, Math.max(FILES_MIN_BYTES, 2 * initial.length));
  return new SharedArrayBuffer(FILES_HEADER_BYTES + room);
}

/** The page publishes a new version; false when it does not fit (the instance keeps its
 * files until its next start). */
export function publishFiles(sab, encoded) {
  const hdr = new Int32Array(sab, 0, FILES_HEADER_BYTES / 4);
  const room = new Uint8Array(sab, FILES_HEADER_BYTES);
  if (encoded.length > room.length) return false;
  Atomics.add(hdr, F_VERSION, 1); // odd: being written
  room.set(encoded);
  Atomics.store(hdr, F_LENGTH, encoded.length);
  Atomics.add(hdr, F_VERSION, 1); // even: complete
  return true;
}

/** The worker's view: the newest complete version after ``seen``, or null (none, or one being
 * written right now: taken at a later lookup). */
export function readFiles(sab, seen) {
  const hdr = new Int32Array(sab, 0, FILES_HEADER_BYTES / 4);
  const before = Atomics.load(hdr, F_VERSION);
  if (before === seen || before % 2 === 1) return null;
  const length = Atomics.load(hdr, F_LENGTH);
  const copy = new Uint8Array(sab, FILES_HEADER_BYTES, length).slice();
  if (Atomics.load(hdr, F_VERSION) !== before) return null;
  return { version: before, files: decodeFiles(copy) };
}
