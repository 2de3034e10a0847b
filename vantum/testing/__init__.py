"""Protocol-faithful fake providers and clients, shipped so users can test without keys."""
