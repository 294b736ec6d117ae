"""MetaEdge's messages beside its results: one logger, ``metaedge``, whose lines go to the standard error of the
moment as ``metaedge: …`` (``metaedge: warning: …``). The command line's ``-v`` and ``-q`` set how much; a program
using the library configures it like any other logger (without a handler, warnings still reach stderr)."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("metaedge")


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged (tests and callers may replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"metaedge: {level}{record.getMessage()}"


def configure(level: int) -> None:
    """Lines of ``level`` and above to stderr, once however often it is called."""
    if not any(isinstance(h, _Stderr) for h in LOGGER.handlers):
        handler = _Stderr()
        handler.setFormatter(_Lines())
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(level)
