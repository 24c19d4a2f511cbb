// ed25519.js — one job: Ed25519 keys and signatures, the same as `cryptography` gives natively
// (conventions: ../bridge.js).
//
//   ed25519Generate() -> Promise<{pub: Uint8Array(32, raw), pkcs8: Uint8Array(48, DER)}>
//   ed25519Sign(pkcs8, data) -> Promise<Uint8Array(64)>
//   ed25519Verify(pub, sig, data) -> Promise<bool>   false also for a malformed key/signature
//   cryptoInfo() -> {ed25519: "webcrypto" | "noble" | null (not chosen yet), reason,
//       requested: "auto" | "webcrypto" | "noble", secureContext, subtle, loadMs}
//   Two implementations, chosen once, at the first Ed25519 call:
//   * "webcrypto": crypto.subtle with {name: "Ed25519"}, used whenever the page has it: a
//     secure context (https, or http from localhost / 127.0.0.1, which is what
//     `p2pkube signal` prints first) in a browser whose WebCrypto has Ed25519 (probed by
//     importing a public key).
//   * "noble": @noble/ed25519 with @noble/hashes' sha512 (set as its `hashes.sha512` and
//     `hashes.sha512Async`, so it never touches crypto.subtle), bundled as ed25519.mjs and
//     imported only then: on a page that is not a secure context (http from a LAN address,
//     where crypto.subtle is undefined), or whose WebCrypto lacks Ed25519. Randomness is
//     crypto.getRandomValues, which insecure pages have. Verification is the library's strict
//     RFC 8032 / FIPS 186-5 mode ({zip215: false}: canonical encodings). One difference: it
//     refuses small-order public keys, for which Chromium's WebCrypto and `cryptography`
//     accept a trivial signature (R = identity, S = 0); no real node has such a key (its
//     signatures would prove nothing).
//   Both use the same formats: the raw 32-byte public key, and the private key as the 48-byte
//   PKCS#8 DER WebCrypto exports (RFC 8410: a fixed 16-byte prefix, then the 32-byte seed),
//   so a key stored in IndexedDB by one works with the other; Ed25519 is deterministic, so
//   both give the very same signature. configure({ed25519: "noble" | "webcrypto" | "auto"})
//   before the first call forces one (tests); configure({ed25519Url}) says where
//   ed25519.mjs is (app.js: its cache-busted URL).

import { errorText, toBytes } from "./interop.js";

const ED25519 = { name: "Ed25519" };
const signingKeys = new Map(); // hex of pkcs8 -> CryptoKey
// RFC 8410 PrivateKeyInfo of an Ed25519 key, as WebCrypto exports it and `cryptography`
// writes it (PKCS8, DER, no encryption): SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
// OCTET STRING { OCTET STRING (32 bytes: the seed) } }.
const PKCS8_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
);
// RFC 8032 test 1's public key: what the WebCrypto probe imports.
const PROBE_PUBLIC = Uint8Array.from(
  "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".match(/../g),
  (h) => parseInt(h, 16),
);
const ED25519_MODES = ["auto", "webcrypto", "noble"];
// import.meta.url is the bundle's (dist/bridge.js), beside which ed25519.mjs is built.
let ed25519Url = new URL("./ed25519.mjs", import.meta.url).href;
let ed25519Requested = "auto";
let ed25519Choice = null; // Promise<{name, impl}> once the first call chose
const cryptoState = { ed25519: null, reason: "no Ed25519 call yet", loadMs: null };

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The 32-byte seed of a 48-byte RFC 8410 PKCS#8 DER key; throws for anything else. */
function seedOf(der) {
  if (der.length !== PKCS8_PREFIX.length + 32 || !sameBytes(der.subarray(0, PKCS8_PREFIX.length), PKCS8_PREFIX)) {
    throw new Error(`not an Ed25519 PKCS#8 key (expected ${PKCS8_PREFIX.length + 32} bytes of RFC 8410 DER, got ${der.length})`);
  }
  return der.slice(PKCS8_PREFIX.length);
}

function pkcs8Of(seed) {
  const der = new Uint8Array(PKCS8_PREFIX.length + 32);
  der.set(PKCS8_PREFIX, 0);
  der.set(seed, PKCS8_PREFIX.length);
  return der;
}

const webcrypto = {
  async generate() {
    const pair = await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"]);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
    return { pub, pkcs8 };
  },
  async sign(der, message) {
    const id = hex(der);
    let key = signingKeys.get(id);
    if (!key) {
      key = await crypto.subtle.importKey("pkcs8", der, ED25519, false, ["sign"]);
      if (signingKeys.size > 16) signingKeys.clear();
      signingKeys.set(id, key);
    }
    return new Uint8Array(await crypto.subtle.sign(ED25519, key, message));
  },
  async verify(raw, signature, message) {
    const key = await crypto.subtle.importKey("raw", raw, ED25519, false, ["verify"]);
    return await crypto.subtle.verify(ED25519, key, signature, message);
  },
};

/** The noble implementation over the lazily imported ed25519.mjs (sha512 already set there). */
function nobleOver(ed) {
  return {
    async generate() {
      const seed = ed.utils.randomSecretKey(); // crypto.getRandomValues
      return { pub: ed.getPublicKey(seed), pkcs8: pkcs8Of(seed) };
    },
    async sign(der, message) {
      return ed.sign(message, seedOf(der));
    },
    async verify(raw, signature, message) {
      return ed.verify(signature, message, raw, { zip215: false });
    },
  };
}

/** Why WebCrypto's Ed25519 cannot be used here, or null when it can. */
async function webcryptoMissing() {
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    return globalThis.isSecureContext === false
      ? "crypto.subtle is undefined: the page is not a secure context"
      : "crypto.subtle is undefined";
  }
  try {
    await crypto.subtle.importKey("raw", PROBE_PUBLIC, ED25519, false, ["verify"]);
    return null;
  } catch (e) {
    return `WebCrypto has no Ed25519 (${e && e.name ? e.name : errorText(e)})`;
  }
}

async function loadNoble() {
  const started = performance.now();
  let module;
  try {
    module = await import(ed25519Url);
  } catch (e) {
    throw new Error(`cannot load the Ed25519 fallback ${ed25519Url}: ${errorText(e)}`);
  }
  if (typeof module.hashes?.sha512 !== "function") {
    throw new Error(`${ed25519Url} is not the Ed25519 bundle (no hashes.sha512 set)`);
  }
  cryptoState.loadMs = Math.round((performance.now() - started) * 10) / 10;
  return nobleOver(module);
}

async function choose(requested) {
  const missing = await webcryptoMissing();
  if (requested === "webcrypto" || (requested === "auto" && missing === null)) {
    if (missing !== null) throw new Error(`Ed25519 through WebCrypto: ${missing}`);
    return { name: "webcrypto", impl: webcrypto, reason: requested === "auto" ? "WebCrypto has Ed25519" : "forced by configure()" };
  }
  const impl = await loadNoble();
  return { name: "noble", impl, reason: requested === "auto" ? missing : "forced by configure()" };
}

/** The implementation in use, chosen by the first call (a failed choice is retried). */
function ed25519Impl() {
  if (!ed25519Choice) {
    const requested = ed25519Requested;
    ed25519Choice = choose(requested).then(
      (chosen) => {
        cryptoState.ed25519 = chosen.name;
        cryptoState.reason = chosen.reason;
        if (chosen.name === "noble" && requested === "auto") {
          console.info(`p2pjs: Ed25519 by @noble/ed25519 (${chosen.reason})`);
        }
        return chosen.impl;
      },
      (e) => {
        ed25519Choice = null;
        cryptoState.reason = errorText(e);
        throw e;
      },
    );
  }
  return ed25519Choice;
}

/** configure()'s Ed25519 part: where ed25519.mjs is, and which implementation to force. */
export function configureEd25519(o) {
  if (o.ed25519Url) ed25519Url = new URL(String(o.ed25519Url), location.href).href;
  if (o.ed25519 != null) setEd25519Mode(o.ed25519);
}

function setEd25519Mode(mode) {
  mode = String(mode);
  if (!ED25519_MODES.includes(mode)) throw new Error(`ed25519: one of ${ED25519_MODES.join(", ")}, not ${JSON.stringify(mode)}`);
  if (mode === ed25519Requested) return;
  ed25519Requested = mode;
  ed25519Choice = null;
  signingKeys.clear();
  Object.assign(cryptoState, { ed25519: null, reason: "no Ed25519 call yet" });
}

export function cryptoInfo() {
  return {
    ...cryptoState,
    requested: ed25519Requested,
    secureContext: Boolean(globalThis.isSecureContext),
    subtle: Boolean(globalThis.crypto && globalThis.crypto.subtle),
  };
}

export async function ed25519Generate() {
  return (await ed25519Impl()).generate();
}

export async function ed25519Sign(pkcs8, data) {
  const der = toBytes(pkcs8, "ed25519Sign pkcs8");
  const message = toBytes(data, "ed25519Sign data");
  return (await ed25519Impl()).sign(der, message);
}

export async function ed25519Verify(pub, sig, data) {
  let raw, signature, message;
  try {
    raw = toBytes(pub, "ed25519Verify pub");
    signature = toBytes(sig, "ed25519Verify sig");
    message = toBytes(data, "ed25519Verify data");
  } catch (_) {
    return false;
  }
  if (raw.length !== 32 || signature.length !== 64) return false;
  const impl = await ed25519Impl();
  try {
    return Boolean(await impl.verify(raw, signature, message));
  } catch (_) {
    return false;
  }
}
