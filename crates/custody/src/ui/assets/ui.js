// custody's web page: the one script. It checks an entry's receipt in the browser, trusting
// nothing the server says: the entry's bytes are hashed here, the inclusion proof is folded up
// to the checkpoint's root here, and the checkpoint's Ed25519 signature is checked here with
// WebCrypto against the verifier key the person pinned. What it shows afterwards is decoded
// from the verified bytes. No network requests, no eval, no innerHTML.
"use strict";

const KEY_STORE = "custody.verifier-key";
const KINDS = [null, "request", "notification", "response", "error", "rejected", "session_opened",
  "session_closed", "gateway_started", "gateway_stopped", "config_changed", "key_changed",
  "heartbeat", "auth_failure", "approval_requested", "approval_granted", "approval_denied",
  "approval_expired", "approval_cancelled", "approval_abandoned", "notification_failed", "alarm",
  "predecessor", "payload_erased", "log_read"];
const enc = new TextEncoder();

function b64(s) {
  const bin = atob(s.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

// A verifier key "name+hexid+base64(0x01 || 32-byte Ed25519 key)", its id checked.
async function parseKey(text) {
  const s = text.trim();
  // A key name has no "+" (C2SP signed-note); the base64 after the id may.
  const plus1 = s.indexOf("+");
  const plus2 = s.indexOf("+", plus1 + 1);
  if (plus1 <= 0 || plus2 !== plus1 + 9) throw new Error("the verifier key must look like name+keyid+base64");
  const name = s.slice(0, plus1);
  const id = s.slice(plus1 + 1, plus2);
  const raw = b64(s.slice(plus2 + 1));
  if (raw.length !== 33 || raw[0] !== 1) throw new Error("the verifier key is not an Ed25519 note key");
  const want = (await sha256(enc.encode(name + "\n"), raw)).slice(0, 4);
  if (hex(want) !== id.toLowerCase()) throw new Error("the verifier key's id does not match its name and key");
  const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
  return { name, id: want, key };
}

// A signed note: its text and signature lines.
function parseNote(note) {
  const cut = note.indexOf("\n\n");
  if (cut < 0) throw new Error("the checkpoint has no signatures");
  const text = note.slice(0, cut + 1);
  const sigs = note.slice(cut + 2).split("\n").filter((l) => l.length > 0).map((line) => {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error("a signature line of the checkpoint is malformed");
    return { name: m[1], bytes: b64(m[2]) };
  });
  return { text, sigs };
}

// RFC 9162 section 2.1.3.2.
async function rootFromInclusion(index, size, leaf, path) {
  let fn = index, sn = size - 1n, r = leaf;
  for (const p of path) {
    if (sn === 0n) throw new Error("the proof is longer than the tree allows");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(new Uint8Array([1]), p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await sha256(new Uint8Array([1]), r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof is shorter than the tree needs");
  return r;
}

// The entry's header fields, decoded from its bytes (see crates/tlog/src/entry.rs).
function decodeEntry(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n) => { if (at + n > bytes.length) throw new Error("the entry's bytes end early"); };
  const u8 = () => { need(1); return bytes[at++]; };
  const u64 = () => { need(8); const v = view.getBigUint64(at); at += 8; return v; };
  const str = () => {
    need(4); const n = view.getUint32(at); at += 4; need(n);
    const s = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(at, at + n)); at += n; return s;
  };
  const version = u8();
  const index = u64();
  const kind = u8();
  const direction = u8();
  const time = u64();
  const [endpoint, session, id, method, target, caller] = [str(), str(), str(), str(), str(), str()];
  const request = u8() === 1 ? u64() : null;
  const detail = str();
  const commitments = [];
  if (version === 1) {
    need(4);
    const n = view.getUint32(at);
    at += 4;
    need(n);
    at += n;
  } else if (version === 2) {
    const count = u8();
    for (let i = 0; i < count; i++) {
      const slot = u8();
      const length = u64();
      need(32);
      commitments.push({ slot, length, hash: bytes.slice(at, at + 32) });
      at += 32;
    }
  }
  if (at !== bytes.length) throw new Error("the entry's bytes go on past its last field");
  return { version, index, kind: KINDS[kind] || String(kind), direction, time, endpoint, session, id, method, target, caller, request, detail, commitments };
}

const PAYLOAD_TAG = enc.encode("custody payload commitment v1\0");
const SLOTS = { 1: "the message", 2: "the upstream's headers" };

// Each payload the page carries, checked against its commitment in the verified entry.
async function checkPayloads(entry, out) {
  const els = Array.from(document.querySelectorAll("pre.payload-bytes"));
  for (const c of entry.commitments) {
    const el = els.find((e) => Number(e.dataset.slot) === c.slot);
    const what = SLOTS[c.slot] || `payload ${c.slot}`;
    if (!el) {
      out.push(["note", `${what}: not shown to you, or erased; its commitment is in the verified entry`, null]);
      continue;
    }
    const opening = Uint8Array.from((el.dataset.opening.match(/../g) || []).map((h) => parseInt(h, 16)));
    const data = b64(el.textContent);
    if (opening.length !== 32) throw new Error(`${what}: its opening is not 32 bytes`);
    const hash = await sha256(PAYLOAD_TAG, opening, data);
    if (BigInt(data.length) !== c.length || !equal(hash, c.hash)) {
      throw new Error(`${what} does not match its commitment in the entry: it was changed where payloads are stored`);
    }
    out.push(["ok", `${what} matches its commitment`, new TextDecoder().decode(data)]);
  }
}

function row(dl, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

async function verify(button) {
  const out = document.getElementById("verify-result");
  out.replaceChildren();
  const say = (cls, text) => {
    const p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    out.append(p);
  };
  try {
    const keyText = document.getElementById("verifier-key").value;
    if (!keyText.trim()) throw new Error("pin the log's verifier key first: take it from your own records (the `custody keygen` output, your CI's pinned key), not from this page");
    const key = await parseKey(keyText);
    if (document.getElementById("pin-key").checked) localStorage.setItem(KEY_STORE, keyText.trim());
    const receipt = document.getElementById("receipt").textContent;
    const bytes = b64(document.getElementById("entry-bytes").textContent);
    const cut = receipt.indexOf("\n\n");
    if (cut < 0) throw new Error("the receipt has no checkpoint");
    const lines = receipt.slice(0, cut).split("\n");
    if (lines[0] !== "c2sp.org/tlog-proof@v1") throw new Error("the receipt is not a c2sp.org/tlog-proof@v1");
    let i = 1, extra = null;
    if (lines[i] && lines[i].startsWith("extra ")) extra = b64(lines[i++].slice(6));
    if (!lines[i] || !lines[i].startsWith("index ")) throw new Error("the receipt names no index");
    const decimal = (t, what) => {
      if (!/^(0|[1-9][0-9]{0,19})$/.test(t)) throw new Error(`${what} is not a number`);
      return BigInt(t);
    };
    const index = decimal(lines[i++].slice(6), "the receipt's index");
    const path = lines.slice(i).map(b64);
    if (path.length > 64 || path.some((h) => h.length !== 32)) throw new Error("the receipt's proof is malformed");
    const note = parseNote(receipt.slice(cut + 2));
    const body = note.text.split("\n");
    const size = decimal(body[1] || "", "the checkpoint's size");
    const root = b64(body[2] || "");
    if (root.length !== 32) throw new Error("the checkpoint's root is not a hash");
    if (index >= size) throw new Error(`entry ${index} is not in a tree of ${size} entries`);
    if (body[0] !== key.name) throw new Error(`the checkpoint is of log ${body[0]}, not of ${key.name} whose key is pinned`);
    const sig = note.sigs.find((s) => s.name === key.name && equal(s.bytes.slice(0, 4), key.id));
    if (!sig) throw new Error("the checkpoint carries no signature by the pinned key");
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key.key, sig.bytes.slice(4), enc.encode(note.text));
    if (!ok) throw new Error("the checkpoint's signature does not verify with the pinned key");
    const entry = decodeEntry(bytes);
    if (entry.index !== index) throw new Error(`the entry's bytes name index ${entry.index}, the receipt ${index}`);
    if (String(index) !== button.dataset.index) throw new Error(`the receipt is for entry ${index}, this page for ${button.dataset.index}`);
    const leaf = await sha256(new Uint8Array([0]), bytes);
    if (extra && !equal(extra, leaf)) throw new Error("the entry's bytes do not hash to the receipt's leaf");
    const computed = await rootFromInclusion(index, size, leaf, path);
    if (!equal(computed, root)) throw new Error("the inclusion proof does not lead to the checkpoint's root: the entry is not in that tree");
    const payloads = [];
    await checkPayloads(entry, payloads);
    say("ok", `Verified: entry ${index} (leaf ${hex(leaf)}) is in the tree of ${size} entries whose root ${hex(root)} is signed by ${key.name}.`);
    for (const [cls, text, body] of payloads) {
      say(cls, text);
      if (body !== null) {
        const pre = document.createElement("pre");
        pre.textContent = body;
        out.append(pre);
      }
    }
    const dl = document.createElement("dl");
    dl.className = "decoded";
    row(dl, "Kind", entry.kind);
    row(dl, "Time", new Date(Number(entry.time / 1000000n)).toISOString());
    row(dl, "Endpoint", entry.endpoint);
    row(dl, "Method", entry.method);
    row(dl, "Target", entry.target);
    row(dl, "Caller", entry.caller);
    row(dl, "Detail", entry.detail);
    const h = document.createElement("h3");
    h.textContent = "Decoded from the verified bytes";
    out.append(h, dl);
  } catch (e) {
    say("error", `Not verified: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("verify");
  if (!button) return;
  const input = document.getElementById("verifier-key");
  const pinned = localStorage.getItem(KEY_STORE);
  if (pinned && !input.value) input.value = pinned;
  button.addEventListener("click", () => verify(button));
});
