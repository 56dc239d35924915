"""A BOLT #8 peer built on pyln-proto, driven by tests/test_transport.py.

It runs under a separate interpreter that has ``pyln-proto`` installed:
pyln-proto depends on ``coincurve-cp314-fix``, a fork of coincurve that
installs its own top-level ``coincurve`` package, so it must not go into the
project's venv (it would replace the real ``coincurve``). Not collected by
pytest; only :func:`make_message` is imported by the tests (pyln is imported
lazily, so that works without pyln-proto).

Usage::

    python pyln_peer.py server SECRET_HEX COUNT
        Listen on 127.0.0.1 (prints "PORT <n>"), accept one connection
        (prints "REMOTE <initiator node id hex>"), then COUNT times: read a
        message and send back b"pyln:" + message. Prints "DONE" and closes.
    python pyln_peer.py client SECRET_HEX NODE_ID_HEX PORT COUNT
        Connect to 127.0.0.1:PORT, expecting node NODE_ID_HEX, then COUNT
        times: send make_message(i) and check that the reply is
        b"ours:" + make_message(i). Prints "DONE" and closes.

Exit status 0 on success, 1 on a wrong reply; errors raise.
"""

from __future__ import annotations

import socket
import sys


def make_message(i: int) -> bytes:
    """The ``i``-th test message: 0 to 1799 bytes, content depending on ``i``."""
    size = (i * 389) % 1800
    pattern = i.to_bytes(4, "big") + b"\xa5\x5a"
    return (pattern * (size // len(pattern) + 1))[:size]


def _server(secret: bytes, count: int) -> int:
    from pyln.proto.wire import LightningServerSocket, PrivateKey

    with LightningServerSocket(PrivateKey(secret)) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        print("PORT", listener.getsockname()[1], flush=True)
        lconn, _ = listener.accept()
    try:
        lconn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("REMOTE", lconn.remote_pubkey.serializeCompressed().hex(), flush=True)
        for _ in range(count):
            lconn.send_message(b"pyln:" + lconn.read_message())
        print("DONE", flush=True)
    finally:
        lconn.connection.close()
    return 0


def _client(secret: bytes, node_id: bytes, port: int, count: int) -> int:
    from pyln.proto.wire import PrivateKey, connect

    lconn = connect(PrivateKey(secret), node_id, "127.0.0.1", port)
    try:
        lconn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count):
            msg = make_message(i)
            lconn.send_message(msg)
            reply = lconn.read_message()
            if reply != b"ours:" + msg:
                print(f"wrong reply to message {i}: {reply[:40].hex()}", file=sys.stderr)
                return 1
        print("DONE", flush=True)
    finally:
        lconn.connection.close()
    return 0


def main(argv: list[str]) -> int:
    socket.setdefaulttimeout(60)  # never hang a test run
    if len(argv) == 3 and argv[0] == "server":
        return _server(bytes.fromhex(argv[1]), int(argv[2]))
    if len(argv) == 5 and argv[0] == "client":
        return _client(bytes.fromhex(argv[1]), bytes.fromhex(argv[2]), int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
