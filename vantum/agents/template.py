"""``{name}`` placeholders in an agent's instructions and greeting, filled safely.

Only plain names are allowed: no attribute access (``{a.b}``), no indexing
(``{a[0]}``), no conversions or format specs. :class:`string.Formatter` is used to
*parse* the text only, never to format it, so nothing in a template can reach a
Python object; ``{{`` and ``}}`` are literal braces. A placeholder without a value is
an error (never a silent blank): at start-up for an agent's own defaults, per call
for variables a call must supply.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from ..errors import VantumError

_PARSER = string.Formatter()


class TemplateError(VantumError):
    """A template is malformed, or a call lacks a value for one of its placeholders."""


def placeholders(text: str) -> tuple[str, ...]:
    """The placeholder names in ``text``, in order of first use.

    Raises :class:`TemplateError` for anything but ``{name}`` (a Python identifier).
    """
    names: list[str] = []
    try:
        parts = list(_PARSER.parse(text))
    except ValueError as exc:  # e.g. "Single '}' encountered"
        raise TemplateError(
            f"bad template: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise TemplateError(
                f"placeholder {shown} is not allowed: use {{name}} with a plain name "
                "(letters, digits, _)"
            )
        if field not in names:
            names.append(field)
    return tuple(names)


def render(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with every ``{name}`` replaced by ``variables[name]``.

    Raises :class:`TemplateError` naming every placeholder without a value.
    """
    missing = [n for n in placeholders(text) if n not in variables]
    if missing:
        raise TemplateError("no value for " + ", ".join("{" + n + "}" for n in missing))
    out: list[str] = []
    for literal, field, _spec, _conversion in _PARSER.parse(text):
        out.append(literal)
        if field is not None:
            out.append(str(variables[field]))
    return "".join(out)


def escape(text: str) -> str:
    """``text`` as a template that renders to itself (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


__all__ = ["TemplateError", "escape", "placeholders", "render"]
