"""A lean MQTT v5 client for load generation: pre-encoded packets on plain sockets, one thread for all readers.

paho spends ~100 us of Python per message on each side; eight paho readers in one process cap the load near
2,100 requests/s on this 2-core machine, below what the gateway is asked to sustain. This client does only what a
simulated reader needs (CONNECT with a password, one SUBSCRIBE, QoS 1 PUBLISH with ResponseTopic and
CorrelationData, PUBACK of incoming answers), so the measured figure is the gateway's, not the load generator's.
Only the benchmark uses it; the product uses paho.
"""

from __future__ import annotations

import selectors
import socket
import struct
from collections.abc import Callable


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean start
    body = _str("MQTT") + bytes([5, flags]) + struct.pack(">H", keepalive) + b"\x00"
    return _packet(0x10, body + _str(client_id) + _str(username) + _str(password))


def subscribe_packet(packet_id: int, topic: str) -> bytes:
    return _packet(0x82, struct.pack(">H", packet_id) + b"\x00" + _str(topic) + b"\x01")


def publish_packet(
    topic: str, packet_id: int, payload: bytes, response_topic: str, correlation: bytes, expiry_s: int | None = None
) -> bytes:
    props = b"\x08" + _str(response_topic) + b"\x09" + _str(correlation)
    if expiry_s is not None:  # Message Expiry Interval, as readers set it on decision requests
        props += b"\x02" + struct.pack(">I", expiry_s)
    body = _str(topic) + struct.pack(">H", packet_id) + _varint(len(props)) + props + payload
    return _packet(0x32, body)


class WireClient:
    """One simulated reader's connection. `on_answer(correlation)` is called for each answer received."""

    def __init__(self, port: int, client_id: str, username: str, password: str, answers: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id, username, password))
        first, body = self._read_packet_blocking()
        if first >> 4 != 2 or body[1] != 0:
            raise ConnectionError(f"{username}: CONNACK refused (reason {body[1]:#x})")
        self.sock.sendall(subscribe_packet(1, answers))
        first, body = self._read_packet_blocking()
        if first >> 4 != 9 or body[-1] > 2:
            raise ConnectionError(f"{username}: SUBSCRIBE to {answers} refused")
        self.sock.setblocking(False)
        self._buffer = bytearray()
        self._next_id = 1

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_packet_blocking(self) -> tuple[int, bytes]:
        first = self._read_exact(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read_exact(1)[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, self._read_exact(length)

    def packet_id(self) -> int:
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        return pid

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def pump(self, on_answer: Callable[[bytes], None]) -> None:
        """Read what has arrived; acknowledge and report every complete answer."""
        try:
            while chunk := self.sock.recv(262144):
                self._buffer += chunk
                if len(chunk) < 262144:
                    break
        except BlockingIOError:
            pass
        buf = self._buffer
        pos = 0
        acks = bytearray()
        while True:
            if len(buf) - pos < 2:
                break
            first = buf[pos]
            length, shift, i = 0, 0, pos + 1
            while i < len(buf):
                byte = buf[i]
                length += (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if len(buf) - i < length:
                break
            body = bytes(buf[i : i + length])
            pos = i + length
            if first >> 4 == 3:  # PUBLISH (QoS 1 from the broker)
                topic_len = struct.unpack_from(">H", body, 0)[0]
                at = 2 + topic_len
                packet_id = body[at : at + 2]
                at += 2
                prop_len, shift = 0, 0
                while True:
                    byte = body[at]
                    at += 1
                    prop_len += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                correlation = _property(body[at : at + prop_len], 0x09)
                acks += b"\x40\x02" + packet_id
                if correlation is not None:
                    on_answer(correlation)
        del buf[:pos]
        if acks:
            self.send(bytes(acks))

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        finally:
            self.sock.close()


def _property(props: bytes, wanted: int) -> bytes | None:
    """The value of a binary or string property (CorrelationData, ResponseTopic...) among MQTT v5 properties."""
    at = 0
    while at < len(props):
        ident = props[at]
        at += 1
        if ident in (0x08, 0x09, 0x03, 0x1A, 0x1C, 0x1F, 0x15, 0x16):  # 2-byte length prefixed
            n = struct.unpack_from(">H", props, at)[0]
            value = props[at + 2 : at + 2 + n]
            at += 2 + n
            if ident == wanted:
                return value
        elif ident == 0x26:  # user property: two strings
            for _ in range(2):
                n = struct.unpack_from(">H", props, at)[0]
                at += 2 + n
        elif ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):  # byte
            at += 1
        elif ident in (0x13, 0x21, 0x22, 0x23):  # two-byte integer
            at += 2
        elif ident in (0x02, 0x11, 0x18, 0x27):  # four-byte integer
            at += 4
        elif ident == 0x0B:  # subscription identifier: varint
            while props[at] & 0x80:
                at += 1
            at += 1
        else:
            return None  # unknown property: stop rather than misread
    return None


def selector_for(clients: list[WireClient]) -> selectors.DefaultSelector:
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    return sel
