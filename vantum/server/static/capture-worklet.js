// AudioWorklet processor: microphone samples -> PCM16 little-endian chunks.
//
// It runs on the audio rendering thread at the AudioContext's (device) rate, so
// the page never resamples: the server is told that rate in audio.input.start.
// Every `chunkFrames` frames it transfers one Int16Array buffer to the main
// thread with the chunk's RMS level (for the meter). Conversion happens here so
// the main thread only forwards bytes.

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frames = (options.processorOptions && options.processorOptions.chunkFrames) || 960;
    this.chunkFrames = frames;
    this.buffer = new Int16Array(frames);
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const input = inputs[0];
    const channel = input && input[0];
    if (!channel) return true; // no source connected yet (or it ended): keep the node alive
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.sumSquares += s * s;
      this.buffer[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
      if (this.filled === this.chunkFrames) {
        const rms = Math.sqrt(this.sumSquares / this.chunkFrames);
        const pcm = this.buffer.buffer;
        this.port.postMessage({ pcm, rms }, [pcm]);
        this.buffer = new Int16Array(this.chunkFrames);
        this.filled = 0;
        this.sumSquares = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-capture", PcmCaptureProcessor);
