"""Speech and language providers behind small, swappable interfaces."""
