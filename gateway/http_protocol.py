"""uvicorn's httptools protocol with a limit on the request head.

httptools buffers a request's headers until they are complete, with no limit of its own: one
client sending 20 MB of headers is held in memory whole (measured). This subclass counts the
bytes of the head as they arrive and answers 431, in OpenAI's error shape, past the limit.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http_errors import ErrorInfo


class _HeadTooLarge(Exception):
    pass


class BoundedHeadProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing request heads over ``max_header_bytes``.

    A class attribute, because uvicorn builds one protocol per connection from the class (and
    pickles it by name for its worker processes): ``limit_headers`` sets it from the settings.
    """

    max_header_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw_head_bytes = 0  # bytes read while a head was open (may include some body)
        self._header_bytes = 0  # the parsed headers of this request
        self._in_head = True
        self._too_large = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._raw_head_bytes = self._header_bytes = 0
        self._in_head = True  # what follows is the next request's head

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        # httptools buffers a header until it is complete: a head that keeps coming without
        # completing is refused once the bytes read exceed the limit (plus one read at most).
        if self._in_head and self._raw_head_bytes > self.max_header_bytes and self.transport:
            self._too_large = True
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        info = ErrorInfo(
            431,
            f"Request headers are too large (over {self.max_header_bytes} bytes).",
            "invalid_request_error",
            "request_headers_too_large",
        )
        body = json.dumps(info.body()).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
        self._in_head = False


def limit_headers(max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with the limit set."""
    BoundedHeadProtocol.max_header_bytes = max_header_bytes
    return BoundedHeadProtocol
