"""Audio plumbing: streaming resampling, PCM helpers, WAV files."""
