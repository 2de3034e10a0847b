"""The HTTP + WebSocket server: one Hypercorn (trio worker) port for everything."""
