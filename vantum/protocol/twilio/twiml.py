"""TwiML: the voice-webhook answer that connects a call to our media stream."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def connect_stream_twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """The voice-webhook answer that opens a bidirectional stream to ``stream_url``.

    Built with ElementTree so URLs and parameter values are escaped, not spliced.
    """
    if not stream_url.startswith(("wss://", "ws://")):
        raise ValueError(f"stream URL must be ws:// or wss://, got {stream_url!r}")
    params = dict(parameters or {})
    for text in (stream_url, *params, *params.values()):
        if _XML_INVALID.search(text):
            raise ValueError(f"{text!r} contains a character XML cannot carry")
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", {"url": stream_url})
    for name, value in params.items():
        ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")
