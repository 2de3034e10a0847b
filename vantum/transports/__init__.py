"""Carriers that turn a connection into a session Transport (browser, Twilio)."""
