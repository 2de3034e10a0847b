// Audio on the page: microphone capture through an AudioWorklet, and gapless
// playback of the answer's PCM16 chunks.

const CHUNK_MS = 20;
const MIN_RATE = 8000;
const MAX_RATE = 48000;
const START_LEAD_S = 0.05; // jitter buffer when playback (re)starts after an underrun

/**
 * An AudioContext at the device rate, unless that rate is outside what the
 * server accepts (8..48 kHz), in which case the browser resamples to 48 kHz.
 */
export async function openAudioContext() {
  let ctx = new AudioContext({ latencyHint: "interactive" });
  if (ctx.sampleRate < MIN_RATE || ctx.sampleRate > MAX_RATE) {
    await ctx.close();
    ctx = new AudioContext({ latencyHint: "interactive", sampleRate: MAX_RATE });
  }
  if (ctx.state === "suspended") await ctx.resume();
  return ctx;
}

/** The microphone as PCM16 chunks of CHUNK_MS at ctx.sampleRate. */
export class Microphone {
  constructor(ctx, onChunk) {
    this.ctx = ctx;
    this.onChunk = onChunk; // (ArrayBuffer pcm16le, rms) => void
    this.stream = null;
    this.node = null;
    this.chunkFrames = Math.round((ctx.sampleRate * CHUNK_MS) / 1000);
  }

  get chunkMs() {
    return CHUNK_MS;
  }

  async open() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new Error("the microphone needs https:// or http://localhost");
    }
    await this.ctx.audioWorklet.addModule("/static/capture-worklet.js");
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "pcm16-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { chunkFrames: this.chunkFrames },
    });
    this.node.port.onmessage = (e) => this.onChunk(e.data.pcm, e.data.rms);
    source.connect(this.node);
  }

  close() {
    if (this.node) this.node.port.onmessage = null;
    if (this.node) this.node.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.node = null;
    this.stream = null;
  }
}

/**
 * Schedules answer chunks back to back on the AudioContext clock, so there is
 * no gap between chunks however the network jitters (as long as the server's
 * lead covers it). `stop()` silences everything already scheduled at once.
 */
export class Player {
  constructor(ctx, onChange) {
    this.ctx = ctx;
    this.onChange = onChange; // (playing: boolean) => void
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.sources = new Set();
    this.nextTime = 0;
    this.secondsScheduled = 0;
    this.sourcesEnded = 0;
    this.sourcesStarted = 0;
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Queue one PCM16LE mono chunk (Uint8Array) recorded at `sampleRate`. */
  enqueue(bytes, sampleRate) {
    const frames = bytes.byteLength >> 1;
    if (frames === 0) return 0;
    const view = new DataView(bytes.buffer, bytes.byteOffset, frames * 2);
    const buffer = this.ctx.createBuffer(1, frames, sampleRate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < frames; i++) data[i] = view.getInt16(2 * i, true) / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.out);
    const now = this.ctx.currentTime;
    if (this.nextTime < now + 0.005) this.nextTime = now + START_LEAD_S;
    src.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.secondsScheduled += buffer.duration;
    this.sourcesStarted += 1;
    const wasPlaying = this.playing;
    this.sources.add(src);
    src.onended = () => {
      if (!this.sources.delete(src)) return;
      this.sourcesEnded += 1;
      if (!this.playing) this.onChange(false);
    };
    if (!wasPlaying) this.onChange(true);
    return buffer.duration;
  }

  /** Stop every scheduled and playing source now (audio.output.cancel, disconnect). */
  stop() {
    const had = this.playing;
    for (const src of this.sources) {
      src.onended = null;
      try {
        src.stop();
      } catch (_) {
        /* already stopped */
      }
      src.disconnect();
    }
    this.sources.clear();
    this.nextTime = 0;
    if (had) this.onChange(false);
  }
}
