"""Shedding in the connection itself: while the decision server is overloaded, ``POST /decide``
is answered 503 by uvicorn's HTTP protocol as soon as the request is parsed, before a request
cycle, an ASGI task, a scope and two response messages are built for it.

Why: a burst at 10x capacity is answered 503 by the thousand, and through the ASGI stack each
503 cost about 71 us of the server's CPU (marginal, every request shed, 2000/s against 4000/s);
here about 21 us: the parse and one write.

Only the plain case takes this path: a keep-alive or closing HTTP/1.x request with nothing else
in flight on its connection, no ``Expect: 100-continue`` (its body may never come) and a socket
that takes writes. Everything else goes through the app, where
:class:`~rlbench.serve.server.DecisionRoute` sheds by the same rule, so answers stay in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from rlbench.serve.server import DecisionServer

DECIDE = b"/decide"


def shedding_protocol(server: DecisionServer, body: bytes) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, answering ``body`` with 503 while ``server.overloaded()``."""

    class SheddingProtocol(HttpToolsProtocol):
        shedding = False  # the request being parsed is answered 503 when it is complete
        keep_alive = True

        def on_message_begin(self) -> None:
            # a shed answer re-arms the keep-alive timer from inside the parser; a request read
            # in the same chunk must not be cut off by it while the app answers
            self._unset_keepalive_if_required()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            parser = self.parser
            if (
                server.overloaded()
                and (self.url == DECIDE or self.url.startswith(DECIDE + b"?"))
                and parser.get_method() == b"POST"
                and not self.expect_100_continue
                and not parser.should_upgrade()
                and (self.cycle is None or self.cycle.response_complete)
                and not self.pipeline
                and not self.flow.write_paused
            ):
                self.shedding = True
                self.keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.shedding:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self.shedding:
                super().on_message_complete()
                return
            self.shedding = False
            server.metrics.shed += 1
            server.metrics.answered(503, 0.0)
            head = [STATUS_LINE[503]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(
                b"content-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                % (len(body), b"" if self.keep_alive else b"connection: close\r\n")
            )
            self.transport.write(b"".join(head) + body)
            if not self.keep_alive:
                self.transport.close()
            self.on_response_complete()  # re-arms the keep-alive timeout, counts the request

    return SheddingProtocol
