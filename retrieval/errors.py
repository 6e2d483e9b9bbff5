"""Errors of the retrieval package.

::

    RetrievalError
    ├── MissingDependency        an optional extra is not installed
    ├── CollectionNotFound       no collection by that name
    ├── InvalidCollectionName    the name could escape the data directory or is malformed
    ├── InvalidDocument          empty, too large, or not decodable text
    ├── InvalidQuery             k out of range, empty query
    └── RetrievalBusy            too many queries wait for the embedder: shed, retry later
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error raised by the retrieval package."""

    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param or self.param


class MissingDependency(RetrievalError):
    def __init__(self, module: str) -> None:
        super().__init__(
            f"missing dependency {module!r}: install the extra with pip install "
            "'loragate[retrieval]'"
        )


class CollectionNotFound(RetrievalError):
    param = "collection"


class InvalidCollectionName(RetrievalError):
    param = "collection"


class InvalidDocument(RetrievalError):
    param = "text"


class InvalidQuery(RetrievalError):
    pass


class RetrievalBusy(RetrievalError):
    """Load shed at the door: past ``query_max_pending`` waiting queries, a new one would
    only wait longer than its client, so it is refused at once and may be sent again."""

    retry_after_s = 1
