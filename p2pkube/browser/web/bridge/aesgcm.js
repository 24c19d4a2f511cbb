// aesgcm.js — one job: open AES-256-GCM values (Secrets sealed natively by `cryptography`)
// for the tab's Python, synchronously (conventions: ../bridge.js).
//
//   aesGcmOpen(key, nonce, ciphertextWithTag, aad) -> Uint8Array | null
//       null when the tag does not verify (another key, or damaged); a TypeError for values
//       that are not bytes.
//   Why @noble/ciphers and not crypto.subtle: WebCrypto's decrypt is a Promise, and the
//   kubelet reads a Secret inside synchronous code (env and volume projection); WebCrypto is
//   also absent from pages that are not a secure context (http from a LAN address).

import { gcm } from "@noble/ciphers/aes.js";
import { toBytes } from "./interop.js";

export function aesGcmOpen(key, nonce, ciphertext, aad) {
  const cipher = gcm(toBytes(key, "aesGcmOpen key"), toBytes(nonce, "aesGcmOpen nonce"),
    toBytes(aad, "aesGcmOpen aad"));
  try {
    return cipher.decrypt(toBytes(ciphertext, "aesGcmOpen ciphertext"));
  } catch (err) {
    return null;
  }
}
