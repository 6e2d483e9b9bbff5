"""Errors of the adapters package (engine client, supervisor, base model).

::

    AdapterError
    ├── MissingDependency       an optional extra is not installed
    ├── BaseModelError          the base model cannot be found or prepared
    └── EngineError             talking to vLLM failed
        ├── EngineUnavailable   no healthy replica, or the connection failed (503, Retry-After)
        ├── EngineTimeout       the replica did not answer in time (504)
        ├── EngineRejected      the replica answered 4xx/5xx; carries its status and message
        └── EngineStreamBroken  the replica went away in the middle of a stream
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error raised by the adapters package."""


class MissingDependency(AdapterError):
    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"missing dependency {module!r}: install the extra with pip install 'loragate[{extra}]'"
        )


class BaseModelError(AdapterError):
    pass


class EngineError(AdapterError):
    pass


class EngineUnavailable(EngineError):
    retry_after_s = 5


class EngineTimeout(EngineError):
    pass


class EngineRejected(EngineError):
    def __init__(self, status_code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param


class EngineStreamBroken(EngineError):
    pass
