"""Developer entry points: ``nox -s tests lint typecheck bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test,embedded]")
    session.run("pytest", "-q", *session.posargs)


LINTED = ("vantum", "tests", "benchmarks")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    # .[dev] only: optional extras (postgres, bench) are ignore_missing_imports in
    # pyproject's [tool.mypy], which also names the files (vantum/ and tests/).
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    session.install("-e", ".[test,bench]")
    session.run("python", "benchmarks/replay.py", *session.posargs)
