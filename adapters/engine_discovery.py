"""Engine URLs that follow a DNS name: ``dns+http://vllm-headless:8000``.

A Kubernetes headless Service answers its name with one A record per ready pod, so
resolving it again and again is how the gateway follows vLLM replicas as they scale,
without a ConfigMap edit per replica. The reconciler must reach every replica itself (it
loads each live adapter on each one), which is why a load-balanced name will not do.

A lookup that fails keeps the last answer: a DNS blip must not empty the pool. An answer
that lists fewer addresses is believed: those pods are gone or no longer ready.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("loragate.engine")

DNS_SCHEME = "dns+"

# host -> its addresses (IPv4 or IPv6 literals); raises OSError when the name does not resolve.
Resolver = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class DnsName:
    """One ``dns+http(s)://host:port`` entry: every address of ``host`` is a replica."""

    scheme: str
    host: str
    port: int

    def url(self, address: str) -> str:
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}"


def is_dns_entry(url: str) -> bool:
    return url.startswith(DNS_SCHEME)


def parse_dns_entry(entry: str) -> DnsName:
    """``dns+http://name:8000`` as a DnsName; ValueError names what is wrong."""
    parts = urlsplit(entry.removeprefix(DNS_SCHEME))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{entry!r}: expected dns+http://NAME:PORT")
    if parts.path.strip("/") not in ("", "v1"):
        raise ValueError(f"{entry!r}: a DNS entry names a host and a port, not a path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return DnsName(parts.scheme, parts.hostname, port)


async def system_resolver(host: str) -> list[str]:
    """The host's addresses through the system resolver (getaddrinfo, in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EngineDiscovery:
    """The current replica URLs: the fixed ones, then every address of each DNS name."""

    def __init__(self, entries: Iterable[str], resolver: Resolver = system_resolver) -> None:
        entries = list(entries)
        self.fixed = [entry for entry in entries if not is_dns_entry(entry)]
        self.names = [parse_dns_entry(entry) for entry in entries if is_dns_entry(entry)]
        self.resolver = resolver
        self._last: dict[DnsName, list[str]] = {name: [] for name in self.names}

    @property
    def dynamic(self) -> bool:
        return bool(self.names)

    def urls(self) -> list[str]:
        """The URLs as of the last lookup (no lookup is made here)."""
        found = [url for name in self.names for url in self._last[name]]
        return list(dict.fromkeys([*self.fixed, *found]))

    async def refresh(self) -> list[str]:
        """Look every name up again and return the URLs; a failed lookup keeps its last."""
        for name in self.names:
            try:
                addresses = await self.resolver(name.host)
            except OSError as exc:
                log.warning(
                    "engine name did not resolve; keeping its last replicas",
                    extra={"host": name.host, "error": str(exc)},
                )
                continue
            self._last[name] = sorted({name.url(address) for address in addresses})
        return self.urls()
