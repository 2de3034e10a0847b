"""Agents: what one call's bot is (instructions, greeting, voice, tools).

``spec`` holds the frozen values an agents file is parsed into; ``loader`` reads the
file (every check at start-up), ``template`` fills ``{name}`` placeholders safely,
``selection`` decides which agent and variables a call gets, ``resolver`` asks the
user's webhook, ``tokens`` mints tokens that choose an agent. The tool runtime builds
on ``spec``. docs/agents.md is the user's guide.
"""
