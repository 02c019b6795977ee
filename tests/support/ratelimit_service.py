"""A stand-in for the global rate limit service (envoyproxy/ratelimit): Envoy's
`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over gRPC on 127.0.0.1,
recording every descriptor it is asked about and answering OVER_LIMIT once a descriptor
value has been asked about more than `limit` times (as envoyproxy/ratelimit does for a
descriptor key configured without a value: one counter per value).

The messages are decoded by hand (protobuf wire format, the few fields used), so no
generated code or .proto files are needed:
    RateLimitRequest  { string domain = 1; repeated RateLimitDescriptor descriptors = 2;
                        uint32 hits_addend = 3; }
    RateLimitDescriptor { repeated Entry entries = 1; }  Entry { string key = 1; string value = 2; }
    RateLimitResponse { Code overall_code = 1; }   Code: OK = 1, OVER_LIMIT = 2"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures
from dataclasses import dataclass

import grpc

from .ports import LOOPBACK

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
OK, OVER_LIMIT = b"\x08\x01", b"\x08\x02"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(data: bytes):
    """(field number, wire type, value) of each field: bytes for length-delimited ones."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i : i + length], i + length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield number, wire, value


Descriptor = tuple[tuple[str, str], ...]  # the entries, (key, value) in order


@dataclass(frozen=True)
class Call:
    domain: str
    descriptors: tuple[Descriptor, ...]


def decode_request(data: bytes) -> Call:
    domain, descriptors = "", []
    for number, _, value in _fields(data):
        if number == 1:
            domain = value.decode()
        elif number == 2:
            entries = []
            for n, _, entry in _fields(value):
                if n == 1:
                    fields = {k: v.decode() for k, _, v in _fields(entry)}
                    entries.append((fields.get(1, ""), fields.get(2, "")))
            descriptors.append(tuple(entries))
    return Call(domain, tuple(descriptors))


class RateLimitService:
    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._counts: Counter[Descriptor] = Counter()

        def should_rate_limit(request: bytes, context) -> bytes:
            call = decode_request(request)
            with self._lock:
                self._calls.append(call)
                over = False
                for descriptor in call.descriptors:
                    self._counts[descriptor] += 1
                    over |= self._counts[descriptor] > self.limit
            return OVER_LIMIT if over else OK

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(should_rate_limit)},
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        self._server.start()

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def stop(self) -> None:
        self._server.stop(grace=None)
