"""Fault injection for the integration tests: a TCP proxy that can be cut or stalled.

Put it between the gateway and a real dependency (PostgreSQL, vLLM) and the gateway sees the
real failure: connections refused and dropped mid-conversation (``cut``), or a peer that
stops sending without closing (``stall``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.support import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._accepter: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._listening.set()
        self._accepter = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepter.start()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a crashed server would."""
        self._listening.clear()
        if self._accepter is not None:
            self._accepter.join()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def restore(self) -> None:
        self.start()

    def stall(self) -> None:
        """Hold every byte coming back from the target; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self.resume()
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self._connections |= {client, upstream}
                threading.Thread(target=self._pump, args=(client, upstream, False),
                                 daemon=True).start()  # fmt: skip
                threading.Thread(target=self._pump, args=(upstream, client, True),
                                 daemon=True).start()  # fmt: skip

    def _pump(self, source: socket.socket, sink: socket.socket, from_target: bool) -> None:
        try:
            while data := source.recv(65536):
                while from_target and not self._flowing.is_set():
                    time.sleep(0.02)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
