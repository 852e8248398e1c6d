"""Why a server could not be started or used: each error carries its reason and the tail of the server's log."""

from __future__ import annotations

from pathlib import Path


class ServingError(RuntimeError):
    """A server that could not be started or used; `log_tail` holds the end of its log, if any."""

    def __init__(self, message: str, log_tail: str = "", log_path: Path | None = None):
        self.reason = message
        self.log_tail = log_tail
        self.log_path = log_path
        if log_tail:
            message = f"{message}\n--- last lines of {log_path or 'the server log'} ---\n{log_tail}"
        super().__init__(message)


class EngineNotFoundError(ServingError):
    """The engine's interpreter or command is missing, or the engine is not installed in it."""


class PortInUseError(ServingError):
    """The port asked for is taken (checked before starting, and read from the log of a server that died)."""


class UnsupportedModelError(ServingError):
    """The engine cannot serve this model as configured (found before starting)."""


class ServerStartError(ServingError):
    """The server died while starting, or did not answer /health in time."""
