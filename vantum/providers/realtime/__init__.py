"""Speech-to-speech over OpenAI's Realtime API (GA dialect): sans-I/O codec, the
response/item tracker that decides truncation, and the connection actor."""
