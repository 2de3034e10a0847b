"""Suite-wide test setup.

The pipeline and end-to-end tests feed the VAD synthetic audio (``tone``,
``speech_like``: a harmonic buzz whose loudness is known) that an energy VAD hears
as speech and a neural one, rightly, does not. They pin the WebRTC VAD, whose
timing they were written against; the Silero path has its own tests on real
(eSpeak) speech, which choose it explicitly (``CallSettings(vad="silero")``).
"""

from __future__ import annotations

import os

os.environ["VANTUM_VAD"] = "webrtc"
