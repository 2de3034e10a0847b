"""Call recording: a stereo WAV per call, caller left, agent right, as heard.

:mod:`.timeline` places both sides' audio in call time (pure), :mod:`.wavfile`
writes it incrementally with a header that is valid after every flush, and
:mod:`.tap` taps a call's transport for the audio and runs the writer beside it.
"""
