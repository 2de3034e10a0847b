"""Agents: what one call's bot is (instructions, greeting, voice, tools).

``spec`` holds the frozen values an agents file is parsed into; the loader, the
per-call selection and the tool runtime build on them.
"""
