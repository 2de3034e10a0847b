// Per-turn latency as stacked horizontal bars in inline SVG (no library).
// One row per `metrics.turn`, one segment per pipeline stage, the
// voice-to-voice total at the end of the row.

const SVG = "http://www.w3.org/2000/svg";

export const STAGES = [
  { key: "endOfSpeechToFinalMs", label: "Speech end → final transcript", color: "#6366f1" },
  { key: "finalToLlmFirstTokenMs", label: "Final → LLM first token", color: "#0ea5e9" },
  { key: "llmFirstTokenToTtsFirstAudioMs", label: "LLM token → TTS first audio", color: "#f59e0b" },
  { key: "ttsFirstAudioToFirstAudioSentMs", label: "TTS audio → sent", color: "#10b981" },
];

const MAX_ROWS = 8;
const W = 340;
const ROW = 24;
const LEFT = 30;
const RIGHT = 62;
const TOP = 6;
const AXIS = 20;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function fmtMs(v) {
  if (v === null || v === undefined) return "—";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
}

function fmtTick(v) {
  return v >= 1000 ? `${+(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
}

/** A round axis maximum (1, 2 or 5 × 10^n) at or above `v`. */
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Draw `turns` (metrics.turn payloads, oldest first) into the <svg> `svg`. */
export function renderLatencyChart(svg, turns) {
  const rows = turns.slice(-MAX_ROWS);
  const offset = turns.length - rows.length;
  svg.replaceChildren();
  const height = TOP + Math.max(rows.length, 1) * ROW + AXIS;
  svg.setAttribute("viewBox", `0 0 ${W} ${height}`);
  if (rows.length === 0) {
    svg.append(el("text", { x: W / 2, y: TOP + ROW / 2 + 4, class: "chart-empty" }, "No turns yet"));
    return;
  }
  const totals = rows.map((t) => t.voiceToVoiceMs ?? STAGES.reduce((s, st) => s + (t[st.key] || 0), 0));
  const max = niceMax(Math.max(...totals, ...rows.map((t) => STAGES.reduce((s, st) => s + (t[st.key] || 0), 0))));
  const span = W - LEFT - RIGHT;
  const x = (ms) => LEFT + (ms / max) * span;
  const axisY = TOP + rows.length * ROW;
  for (const f of [0, 0.5, 1]) {
    const gx = x(f * max);
    svg.append(el("line", { x1: gx, x2: gx, y1: TOP, y2: axisY, class: "chart-grid" }));
    svg.append(el("text", { x: gx, y: axisY + 14, class: "chart-tick" }, fmtTick(f * max)));
  }
  rows.forEach((t, i) => {
    const y = TOP + i * ROW + 5;
    const g = el("g", { class: "chart-row", "data-turn": offset + i + 1 });
    g.append(el("text", { x: LEFT - 8, y: y + 11, class: "chart-label" }, `#${offset + i + 1}`));
    let at = 0;
    for (const st of STAGES) {
      const v = t[st.key];
      if (v === null || v === undefined || v <= 0) continue;
      const rect = el("rect", {
        x: x(at),
        y,
        width: Math.max(x(at + v) - x(at), 1),
        height: ROW - 10,
        rx: 2,
        fill: st.color,
        class: "bar",
      });
      rect.append(el("title", {}, `${st.label}: ${fmtMs(v)}`));
      g.append(rect);
      at += v;
    }
    g.append(el("text", { x: W - RIGHT + 6, y: y + 11, class: "chart-total" }, fmtMs(totals[i])));
    svg.append(g);
  });
}

/** The colour legend, built once from STAGES. */
export function renderLegend(container) {
  container.replaceChildren(
    ...STAGES.map((st) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const sw = document.createElement("i");
      sw.style.background = st.color;
      item.append(sw, st.label);
      return item;
    }),
  );
}
