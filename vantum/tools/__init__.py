"""The tool runtime: what runs when the model calls a function (issue 15).

One kind per module — HTTP endpoints (:mod:`.http_tool`), Python functions
(:mod:`.python_tool`), call control built-ins (:mod:`.builtins`) — behind one
:class:`~.toolbox.ToolBox` per agent, which turns every failure (unknown tool,
arguments that are not JSON, a timeout, a crash, an HTTP error) into a failed
:class:`~.base.ToolResult` the model can talk about. Nothing here decides turns:
the answer loop (``pipeline/answer.py``) calls the toolbox and speaks.
"""
