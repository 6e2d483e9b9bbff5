"""The ``key`` and ``name`` labels of per-key metrics, with a cap on how many keys get one.

Prometheus keeps one series per label set for as long as it retains data, so a label that
takes one value per API key grows without bound on a gateway that mints keys per user.
Here the first ``limit`` keys a process counts keep their own label; every later key is
counted under ``other``. The bound is ``limit + 2`` label pairs per process (``other`` and
``-``, for requests without a key when auth is off), times its workers, whatever the
number of keys. The store-read usage gauges (gateway.key_usage) pick their keys by usage
instead, which is the same in every process.
"""

from __future__ import annotations

from core.store.keys import Principal

OTHER = ("other", "other")
NO_KEY = ("-", "-")


class KeyLabels:
    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit: must be 0 or more")
        self.limit = limit
        self._named: dict[str, tuple[str, str]] = {}

    def of(self, principal: Principal) -> tuple[str, str]:
        """(key id, key name) for this key's series, or ``other`` once the cap is reached."""
        if principal.key_id is None:
            return NO_KEY
        labels = self._named.get(principal.key_id)
        if labels is not None:
            return labels
        if len(self._named) >= self.limit:
            return OTHER
        labels = (principal.key_id, principal.name)
        self._named[principal.key_id] = labels
        return labels
