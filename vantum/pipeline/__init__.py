"""The per-call pipeline: session actors, turn-taking, chunking and conversation context."""
