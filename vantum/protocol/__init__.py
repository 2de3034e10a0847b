"""Sans-I/O wire protocols: the browser envelope, Twilio media streams, mu-law.

Nothing in this package touches a socket; transports feed it bytes and get events.
"""
