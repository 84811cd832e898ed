# The MQTT client's byte stream, the same way on MicroPython and CPython: opening it (plain TCP,
# or TLS that verifies the broker against a CA we were given), reading one packet, waiting with a
# deadline, naming what went wrong while connecting, and closing it.
#
# Facts this relies on (MicroPython 1.28/1.29 unix port, mbedTLS 3.6; CPython 3.11+):
# - asyncio.open_connection(host, port, ssl=context, server_hostname=name) exists on both. On
#   CPython the handshake runs inside it; on MicroPython it runs during the first drain(), and a
#   certificate mbedTLS rejects raises ValueError there (not OSError).
# - MicroPython's SSLContext.load_verify_locations() takes DER only (a PEM is "invalid cert") and
#   adds to the trusted set on every call; CPython's takes DER as well. So CA certificates are
#   converted to DER here and loaded one by one: one code path for both.
import asyncio
import binascii

from sensornode.compat import ticks_diff, ticks_ms
from sensornode.net.mqtt_packet import (
    MQTTConnectionError,
    MQTTProtocolError,
    MQTTTimeout,
    decode_remaining_length,
)

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


def der_certificates(data):
    """The DER certificates in data: PEM text (one or more blocks; str or bytes) or one DER."""
    if isinstance(data, str):
        data = data.encode()
    if _PEM_BEGIN not in data:
        return [bytes(data)]
    found = []
    for block in data.split(_PEM_BEGIN)[1:]:
        if _PEM_END not in block:
            raise ValueError("PEM certificate without its END line")
        found.append(binascii.a2b_base64(block.split(_PEM_END)[0]))
    return found


def tls_context(params):
    """A client SSLContext that requires the broker's certificate to chain to the CAs in
    params: "cadata" (PEM or DER bytes) and/or "cafile" (path of a PEM or DER file). There is
    deliberately no way to skip verification. ValueError on a bad CA (at construction, not at
    the first connect)."""
    import ssl

    unknown = [key for key in params if key not in ("cadata", "cafile")]
    if unknown:
        raise ValueError("unknown TLS parameter(s) %r: use cadata and/or cafile" % unknown)
    cas = []
    if params.get("cafile"):
        with open(params["cafile"], "rb") as file:
            cas += der_certificates(file.read())
    if params.get("cadata"):
        cas += der_certificates(params["cadata"])
    if not cas:
        raise ValueError("TLS needs the CA to verify the broker with: give cadata or cafile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CPython: also checks the hostname
    context.verify_mode = ssl.CERT_REQUIRED
    for der in cas:
        try:
            context.load_verify_locations(cadata=der)
        except OSError as exc:  # CPython's ssl.SSLError; MicroPython raises ValueError itself
            raise ValueError("invalid CA certificate: %r" % exc) from None
    return context


async def open_stream(host, port, context=None, server_hostname=None):
    """(reader, writer) for host:port; TLS when context (an SSLContext) is given, the broker's
    certificate checked against server_hostname (default: host)."""
    if context is None:
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=context,
                                         server_hostname=server_hostname or host)


async def read_packet(reader, max_packet):
    """(first byte, body) of the next packet; MQTTProtocolError if it announces more than
    max_packet bytes (never buffered), EOFError if the stream ends."""
    first = (await reader.readexactly(1))[0]
    header = bytearray()
    while True:  # at most 4 bytes; decode_remaining_length rejects a 4th with a carry
        header.append((await reader.readexactly(1))[0])
        if not header[-1] & 0x80 or len(header) == 4:
            break
    length = decode_remaining_length(header)[0]
    if length > max_packet:
        raise MQTTProtocolError("%d-byte packet exceeds MAX_PACKET (%d)" % (length, max_packet))
    return first, (await reader.readexactly(length) if length else b"")


async def close_stream(writer, abort):
    if writer is None:
        return
    # CPython's close() flushes its buffer first, which never ends on a dead link: abort instead.
    # MicroPython's close() does nothing; its wait_closed() is what closes the socket.
    transport = getattr(writer, "transport", None)
    try:
        if abort and transport is not None:
            transport.abort()
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1)
    except Exception:  # a broken socket may complain while closing; it is closed either way
        pass


async def wait_until(awaitable, deadline, what):
    """await awaitable until the ticks_ms() deadline; MQTTTimeout("timed out waiting for what")."""
    try:
        remaining_ms = max(ticks_diff(deadline, ticks_ms()), 0)
        return await asyncio.wait_for(awaitable, remaining_ms / 1000)
    except asyncio.TimeoutError:
        raise MQTTTimeout("timed out waiting for " + what) from None


def connect_error(exc, where, stage, timeout_ms, tls):
    """The MQTTError a failed connect raises for exc, or None for an exception to re-raise."""
    # TimeoutError first: on CPython it is a subclass of OSError.
    if isinstance(exc, asyncio.TimeoutError):
        return MQTTTimeout("%s gave no answer within %d ms while %s" % (where, timeout_ms, stage))
    # MicroPython's TLS reports a certificate it rejects as a ValueError.
    if isinstance(exc, (OSError, EOFError)) or (tls and isinstance(exc, ValueError)):
        return MQTTConnectionError("cannot connect to %s while %s: %r" % (where, stage, exc))
    return None
