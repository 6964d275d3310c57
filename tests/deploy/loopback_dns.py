"""A minimal DNS server on loopback for tests: A records for names we choose, like a cluster's
DNS answering a headless Service's name with the addresses of its ready pods.

Answers standard queries over UDP (RFC 1035): an A query for a known name gets one A record
per address (TTL 1 s); a known name of another type gets an empty NOERROR answer; an unknown
name gets NXDOMAIN. Names and addresses can change while it runs (`set`), as pods come and go.
"""

from __future__ import annotations

import socket
import struct
import threading

A, IN = 1, 1
NOERROR, NXDOMAIN = 0, 3


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while (length := packet[offset]) != 0:
        labels.append(packet[offset + 1:offset + 1 + length].decode("ascii"))
        offset += 1 + length
    return ".".join(labels).lower(), offset + 1


class LoopbackDNS:
    """`with LoopbackDNS({"svc.example": ["127.0.0.1"]}) as dns:` serves on dns.port."""

    def __init__(self, records: dict[str, list[str]]):
        self._records = {k.lower().rstrip("."): list(v) for k, v in records.items()}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def set(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._records[name.lower().rstrip(".")] = list(addresses)

    def answer(self, query: bytes) -> bytes:
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        name, end = _read_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[end:end + 4])
        question = query[12:end + 4]
        with self._lock:
            addresses = self._records.get(name)
        rcode = NXDOMAIN if addresses is None else NOERROR
        answers = [] if addresses is None or (qtype, qclass) != (A, IN) else addresses
        # Response, same opcode and recursion-desired bit, recursion available, authoritative.
        out_flags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | rcode
        header = struct.pack("!HHHHHH", ident, out_flags, 1, len(answers), 0, 0)
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, A, IN, 1, 4) + socket.inet_aton(a) for a in answers)
        return header + question + records

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(query)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # not a query we understand: no answer, as a server would drop it
            self.queries += 1
            self._sock.sendto(reply, peer)

    def __enter__(self) -> LoopbackDNS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
