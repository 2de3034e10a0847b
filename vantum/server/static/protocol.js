// The Vantum browser protocol (docs/protocol.md) over one WebSocket.
//
// Frames are MessagePack maps {eventType, eventId, sessionId, payload}; the
// vendored @msgpack/msgpack build (msgpack.min.js) provides the global
// `MessagePack`. This module knows the wire, nothing about the page.

const { encode, decode } = globalThis.MessagePack;

export const CLOSE_MEANINGS = {
  1000: "normal end of the session",
  1001: "server shutting down",
  1006: "connection lost (no close frame)",
  1008: "refused: missing or invalid token, unknown agent, or unknown WebSocket path",
  1009: "frame too large for the server",
  1011: "internal server error in this session",
  1013: "server at capacity, try again later",
};

/** UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, version 7, random rest. */
export function uuid7() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  const ms = Date.now();
  for (let i = 0; i < 6; i++) b[i] = Math.floor(ms / 2 ** (8 * (5 - i))) & 0xff;
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function isErrorEvent(eventType) {
  return eventType.startsWith("error.") || eventType.includes(".error.");
}

/**
 * The default endpoint: the page's own host, ws or wss to match http or https.
 * A `?token=` and an `?agent=` (docs/agents.md) on the page's URL are passed on
 * (browsers cannot set WebSocket headers).
 */
export function defaultWsUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const page = new URLSearchParams(loc.search);
  const parts = ["token", "agent"]
    .filter((key) => page.get(key))
    .map((key) => `${key}=${encodeURIComponent(page.get(key))}`);
  const query = parts.length ? `?${parts.join("&")}` : "";
  return `${scheme}//${loc.host}/ws${query}`;
}

/**
 * One session. `onEvent(frame)` gets every decoded server frame;
 * `onClose({code, reason, meaning})` fires once when the socket ends.
 */
export class VantumSocket {
  constructor(url, { onEvent, onClose, onOpen }) {
    this.sessionId = null;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => onOpen && onOpen();
    this.ws.onmessage = (msg) => this._receive(msg.data);
    this.ws.onclose = (e) =>
      this.onClose({
        code: e.code,
        reason: e.reason,
        meaning: CLOSE_MEANINGS[e.code] || "unexpected close",
      });
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  _receive(data) {
    if (typeof data === "string") return; // the protocol is binary-only
    let frame;
    try {
      frame = decode(new Uint8Array(data));
    } catch (err) {
      this.onEvent({ eventType: "client.error.decode", payload: { message: String(err) } });
      return;
    }
    if (frame.eventType === "connection.lifecycle.ack" && !this.sessionId) {
      this.sessionId = frame.sessionId;
    }
    frame.payload = frame.payload || {};
    this.onEvent(frame);
  }

  /** Send one client event; returns its eventId (ACKs repeat it). */
  send(eventType, payload = {}) {
    if (!this.open || !this.sessionId) return null;
    const eventId = uuid7();
    this.ws.send(encode({ eventType, eventId, sessionId: this.sessionId, payload }));
    return eventId;
  }

  startInput(samplingRate, turnMode, extra = {}) {
    return this.send("audio.input.start", { samplingRate, turnMode, encoding: "pcm16", ...extra });
  }

  sendChunk(pcmBuffer) {
    return this.send("audio.input.chunk", { audio: new Uint8Array(pcmBuffer) });
  }

  endInput() {
    return this.send("audio.input.end", {});
  }

  sendText(text) {
    return this.send("conversation.text.input", { text });
  }

  close() {
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client closed");
  }
}
