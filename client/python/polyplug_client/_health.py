"""grpc.health.v1.Health/Check without generated code: Debian's grpcio ships no
grpc_health package, and generating grpc/health/v1 here would shadow the grpc package. The
two messages have one field each, encoded here by hand (protobuf's wire format)."""

from __future__ import annotations

from typing import Sequence

import grpc

CHECK_METHOD = "/grpc.health.v1.Health/Check"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service = 1 (string)}."""
    data = service.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_status(message: bytes) -> int:
    """HealthCheckResponse.status (field 1, an enum); 0 (UNKNOWN) when absent. Fields this
    client does not know are skipped."""
    status = 0
    i = 0

    def read_varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(message):
        key = read_varint()
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = read_varint()
            if field == 1:
                status = value
        elif wire_type == 2:
            i += read_varint()
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        else:
            raise ValueError(f"health response: unexpected wire type {wire_type}")
    return status


def check(channel: grpc.Channel, service: str, timeout: float,
          metadata: Sequence[tuple[str, str]], wait_for_ready: bool) -> int:
    """The serving status number the host answers for `service`; raises grpc.RpcError."""
    method = channel.unary_unary(CHECK_METHOD, request_serializer=encode_request,
                                 response_deserializer=decode_status)
    status: int = method(service, timeout=timeout, metadata=metadata,
                         wait_for_ready=wait_for_ready)
    return status
