// The talk-to-it page: wires the socket, the microphone and the player to the UI.
//
// Everything the page knows lives in `state` (window.vantumState), which the
// end-to-end test reads; the DOM is only a view of it.

import { Microphone, Player, openAudioContext } from "./audio.js";
import { fmtMs, renderLatencyChart, renderLegend } from "./chart.js";
import { VantumSocket, defaultWsUrl, isErrorEvent } from "./protocol.js";
import {
  $,
  addMessage,
  addTag,
  clearErrors,
  hideBanner,
  logEvent,
  renderError,
  scrollMessages,
  setStatus,
  showNotice,
} from "./view.js";

const state = {
  connected: false,
  sessionId: null,
  sampleRate: null,
  turnMode: null,
  capturing: false,
  awaitingAnswer: false,
  finals: [],
  interims: [],
  responses: [],
  audioChunksReceived: 0,
  audioSecondsScheduled: 0,
  audioSecondsSent: 0,
  sourcesStarted: 0,
  sourcesEnded: 0,
  playing: false,
  cancels: 0,
  pauses: 0,
  errors: [],
  metrics: [],
  lastMetrics: null,
  closeCode: null,
  micError: null,
};
window.vantumState = state;

let ctx = null;
let mic = null;
let player = null;
let sock = null;
let userClosed = false;
let opened = false; // the WebSocket handshake succeeded
let openUser = null; // the user message still collecting transcripts
const answers = new Map(); // utteranceId -> {response, view}
const cancelled = new Set();

// ---------------------------------------------------------------- view

function setControls() {
  const on = state.connected;
  $("connect-btn").textContent = on || sock ? "Disconnect" : "Connect";
  $("connect-btn").classList.toggle("btn-primary", !(on || sock));
  $("ws-url").disabled = Boolean(sock);
  const micOk = on && mic !== null;
  $("ptt").disabled = !micOk || state.turnMode === "auto";
  $("handsfree").disabled = !micOk;
  $("text-input").disabled = !on;
  $("send-btn").disabled = !on;
  $("session-id").textContent = state.sessionId ? `session ${state.sessionId.slice(-12)}` : "";
  $("session-id").title = state.sessionId || "";
  renderActivity();
  renderAudioStats();
}

function renderActivity() {
  let kind = "idle";
  let text = state.connected ? "Ready" : "Offline";
  if (state.playing && !(state.capturing && state.turnMode === "manual")) [kind, text] = ["speak", "Speaking"];
  else if (state.capturing) [kind, text] = ["listen", state.turnMode === "auto" ? "Listening · hands-free" : "Listening"];
  else if (state.awaitingAnswer) [kind, text] = ["think", "Thinking"];
  const a = $("activity");
  a.className = `activity activity-${kind}`;
  a.textContent = text;
}

function renderAudioStats() {
  $("stat-rate").textContent = state.sampleRate ? `${(state.sampleRate / 1000).toFixed(1)} kHz` : "—";
  $("stat-sent").textContent = `${state.audioSecondsSent.toFixed(1)} s`;
  $("stat-chunks").textContent = String(state.audioChunksReceived);
  $("stat-scheduled").textContent = `${state.audioSecondsScheduled.toFixed(1)} s`;
  $("stat-cancels").textContent = String(state.cancels);
}

function showError(eventType, message, requestType) {
  const entry = { eventType, message, requestType: requestType || null, at: Date.now() };
  state.errors.push(entry);
  renderError(entry);
}

// ------------------------------------------------------------ protocol events

function userView() {
  if (!openUser) openUser = addMessage("user");
  return openUser;
}

function onEvent(frame) {
  const { eventType: type, payload: p } = frame;
  if (type !== "audio.output.chunk") logEvent(type);
  if (isErrorEvent(type)) {
    let message = p.message || "(no message)";
    if (type === "connection.error.auth") {
      message += ". This server wants a token: open the page with the ?token=… URL that "
        + "`vantum serve` logged, or one from `vantum token` (docs/hardening.md).";
    }
    showError(type, message, frame.requestType);
  }
  switch (type) {
    case "connection.lifecycle.ack":
      state.connected = true;
      state.sessionId = sock.sessionId;
      setStatus("on", "Connected");
      setControls();
      break;
    case "transcript.interim": {
      state.interims.push(p.transcript);
      const v = userView();
      v.interim.textContent = (v.text ? " " : "") + p.transcript;
      scrollMessages();
      break;
    }
    case "transcript.final": {
      const v = userView();
      v.interim.textContent = "";
      if (p.transcript) {
        state.finals.push(p.transcript);
        v.text = v.text ? `${v.text} ${p.transcript}` : p.transcript;
        v.body.textContent = v.text;
        if (!state.capturing) state.awaitingAnswer = true;
      }
      break;
    }
    case "conversation.response.start": {
      if (openUser && !openUser.text) openUser.row.remove();
      openUser = null;
      const response = {
        utteranceId: p.utteranceId,
        text: "",
        audioSeconds: 0,
        complete: false,
        cancelled: false,
      };
      state.responses.push(response);
      const view = addMessage("assistant");
      view.body.classList.add("pending");
      answers.set(p.utteranceId, { response, view });
      state.awaitingAnswer = true;
      break;
    }
    case "conversation.response.text": {
      const a = answers.get(p.utteranceId);
      if (!a) break;
      a.response.text = a.response.text ? `${a.response.text} ${p.text}` : p.text;
      a.view.body.classList.remove("pending");
      a.view.body.textContent = a.response.text;
      scrollMessages();
      break;
    }
    case "audio.output.chunk": {
      if (cancelled.has(p.utteranceId) || !player) break;
      const seconds = player.enqueue(p.audio, p.sampleRate);
      state.audioChunksReceived += 1;
      state.audioSecondsScheduled += seconds;
      const a = answers.get(p.utteranceId);
      if (a) a.response.audioSeconds += seconds;
      state.sourcesStarted = player.sourcesStarted;
      break;
    }
    case "audio.output.pause": {
      // The caller may be talking over the answer: silence it now. What was
      // buffered is dropped; if the answer resumes, the server sends it again.
      if (player) player.stop();
      state.pauses += 1;
      break;
    }
    case "audio.output.resume":
      break; // its chunks follow and are queued as usual
    case "audio.output.cancel": {
      cancelled.add(p.utteranceId);
      if (player) player.stop();
      state.cancels += 1;
      const a = answers.get(p.utteranceId);
      if (a) {
        a.response.cancelled = true;
        addTag(a.view, "interrupted", "warn", "Playback stopped: the caller spoke over this answer");
      }
      break;
    }
    case "conversation.response.complete": {
      const a = answers.get(p.utteranceId);
      if (a) {
        a.response.complete = true;
        a.view.body.classList.remove("pending");
        if (!a.response.text) a.view.body.textContent = "(no answer)";
      }
      state.awaitingAnswer = false;
      break;
    }
    case "metrics.turn":
      onMetrics(p);
      break;
    case "connection.lifecycle.hangup":
    case "connection.lifecycle.max_duration":
      showNotice(p.message || type);
      break;
    default:
      break;
  }
  renderActivity();
  renderAudioStats();
}

function onMetrics(m) {
  state.lastMetrics = m;
  state.metrics.push(m);
  renderLatencyChart($("latency-chart"), state.metrics);
  const totals = state.metrics.map((t) => t.voiceToVoiceMs).filter((v) => v !== null && v !== undefined);
  const sorted = [...totals].sort((a, b) => a - b);
  $("stat-last").textContent = fmtMs(m.voiceToVoiceMs);
  $("stat-median").textContent = sorted.length ? fmtMs(sorted[(sorted.length - 1) >> 1]) : "—";
  $("stat-turns").textContent = String(state.metrics.length);
  const a = answers.get(m.utteranceId);
  if (a && m.voiceToVoiceMs !== null && m.voiceToVoiceMs !== undefined) {
    addTag(a.view, `${fmtMs(m.voiceToVoiceMs)} voice-to-voice`, "info");
  }
}

function onClose({ code, reason, meaning }) {
  const wasConnected = state.connected;
  state.connected = false;
  state.capturing = false;
  state.awaitingAnswer = false;
  state.turnMode = null;
  state.closeCode = code;
  $("handsfree").checked = false;
  $("ptt").classList.remove("active");
  if (player) player.stop();
  if (mic) mic.close();
  mic = null;
  sock = null;
  openUser = null;
  if (userClosed) {
    setStatus("off", "Disconnected");
  } else if (code === 1000) {
    setStatus("off", "Session ended");
    showNotice(`The server ended the session (1000${reason ? `: ${reason}` : ""}).`);
  } else {
    setStatus("err", `Closed ${code}`);
    const why = opened ? meaning : "the server refused the WebSocket or is unreachable";
    const what = wasConnected ? "Connection closed" : "Could not connect";
    showError(`socket.close.${code}`, `${what}: ${why}${reason ? ` — ${reason}` : ""}`);
  }
  setControls();
}

// ------------------------------------------------------------ user actions

async function connect() {
  userClosed = false;
  hideBanner();
  setStatus("wait", "Connecting…");
  try {
    ctx = ctx || (await openAudioContext());
    if (ctx.state === "suspended") await ctx.resume();
    player = player || new Player(ctx, onPlaying);
    state.sampleRate = ctx.sampleRate;
  } catch (err) {
    showError("client.error.audio", `Audio output unavailable: ${err.message || err}`);
  }
  mic = null;
  state.micError = null;
  if (ctx) {
    const m = new Microphone(ctx, onMicChunk);
    try {
      await m.open();
      mic = m;
    } catch (err) {
      state.micError = String(err.message || err);
      showError("client.error.microphone", `Microphone unavailable (${state.micError}); you can still type.`);
    }
  }
  opened = false;
  const onOpen = () => {
    opened = true;
  };
  sock = new VantumSocket($("ws-url").value.trim() || defaultWsUrl(), { onEvent, onClose, onOpen });
  setControls();
}

function disconnect() {
  userClosed = true;
  stopCapture();
  if (sock) sock.close();
}

function onPlaying(playing) {
  state.playing = playing;
  if (player) {
    state.sourcesStarted = player.sourcesStarted;
    state.sourcesEnded = player.sourcesEnded;
  }
  renderActivity();
}

let meterFrame = 0;
function onMicChunk(pcm, rms) {
  if (state.capturing && sock) {
    sock.sendChunk(pcm);
    state.audioSecondsSent += pcm.byteLength / 2 / ctx.sampleRate;
  }
  const level = Math.min(1, Math.max(0, (20 * Math.log10(rms + 1e-9) + 60) / 60));
  if (!meterFrame) {
    meterFrame = requestAnimationFrame(() => {
      meterFrame = 0;
      $("meter-fill").style.width = `${Math.round(level * 100)}%`;
      $("meter").classList.toggle("live", state.capturing);
      renderAudioStats();
    });
  }
}

function startCapture(turnMode) {
  if (!state.connected || !mic || state.capturing) return;
  state.turnMode = turnMode;
  state.capturing = true;
  sock.startInput(ctx.sampleRate, turnMode);
  renderActivity();
}

function stopCapture() {
  if (!state.capturing) return;
  state.capturing = false;
  if (sock) sock.endInput();
  if (state.turnMode === "manual" && openUser && openUser.text) state.awaitingAnswer = true;
  state.turnMode = null;
  renderActivity();
}

function pttDown(e) {
  if ($("ptt").disabled) return;
  e.preventDefault();
  $("ptt").classList.add("active");
  try {
    if (e.pointerId !== undefined) $("ptt").setPointerCapture(e.pointerId);
  } catch (_) {
    /* synthetic events have no capturable pointer; pointerup still arrives */
  }
  startCapture("manual");
}

function pttUp() {
  $("ptt").classList.remove("active");
  if (state.turnMode === "manual") stopCapture();
}

/** Space goes to text fields as usual; anywhere else it is the push-to-talk key. */
function typing(e) {
  const t = e.target;
  return (t instanceof HTMLInputElement && t.type !== "checkbox") || t instanceof HTMLTextAreaElement;
}

function init() {
  $("ws-url").value = defaultWsUrl();
  renderLegend($("legend"));
  renderLatencyChart($("latency-chart"), []);
  $("connect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (sock) disconnect();
    else connect();
  });
  const ptt = $("ptt");
  ptt.addEventListener("pointerdown", pttDown);
  ptt.addEventListener("pointerup", pttUp);
  ptt.addEventListener("pointercancel", pttUp);
  window.addEventListener("keydown", (e) => {
    if (e.code !== "Space" || typing(e)) return;
    e.preventDefault(); // not a click on the focused button or switch
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
    if (!e.repeat) pttDown(e);
  });
  window.addEventListener("keyup", (e) => {
    if (e.code !== "Space" || typing(e)) return;
    e.preventDefault();
    pttUp();
  });
  $("handsfree").addEventListener("change", (e) => {
    if (e.target.checked) startCapture("auto");
    else stopCapture();
    setControls();
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text-input").value.trim();
    if (!text || !sock) return;
    openUser = null;
    const v = addMessage("user", text);
    addTag(v, "typed", "muted");
    sock.sendText(text);
    state.awaitingAnswer = true;
    $("text-input").value = "";
    renderActivity();
  });
  $("banner-close").addEventListener("click", hideBanner);
  $("errors-clear").addEventListener("click", clearErrors);
  setControls();
}

init();
