# MQTT 3.1.1 wire format for the node's client (sensornode.net.mqtt): packet builders and
# parsers, pure bytes in and bytes out, no socket and no asyncio. Runs unchanged on MicroPython
# and CPython. Names are public on purpose: MicroPython keeps `_NAME = const(...)` out of the
# module's globals, so an underscored constant could not be imported by the client.
import struct

from sensornode.compat import const

# Fixed-header first bytes (packet type << 4 | flags) the client sends or accepts.
CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
DUP = const(0x08)  # PUBLISH flag: this packet id may have been sent before
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)  # 3.1.1 requires flags 0b0010 on SUBSCRIBE
SUBACK = const(0x90)
PINGRESP = const(0xD0)
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

MAX_REMAINING_LENGTH = const(268435455)  # four varint bytes of seven bits each

_REFUSALS = ("accepted", "unacceptable protocol version", "identifier rejected",
             "server unavailable", "bad username or password", "not authorized")


class MQTTError(Exception):
    """Base class of every error this client raises."""


class MQTTTimeout(MQTTError):
    """An operation got no answer before its deadline. When publish(..., keep_on_timeout=True)
    left its message in flight, .delivery is that message's receipt (an mqtt_session.Delivery);
    otherwise it is None."""

    def __init__(self, message="", delivery=None):
        super().__init__(message)
        self.delivery = delivery


class MQTTConnectionError(MQTTError):
    """The broker cannot be reached, or the connection is not (or no longer) up."""


class MQTTConnectionRefused(MQTTError):
    """The broker answered CONNECT with a non-zero CONNACK return code (kept in .code)."""

    def __init__(self, code):
        reason = _REFUSALS[code] if code < len(_REFUSALS) else "unknown reason"
        super().__init__("broker refused connection: %s (CONNACK %d)" % (reason, code))
        self.code = code


class MQTTProtocolError(MQTTError):
    """The broker sent bytes that are not valid MQTT 3.1.1; the connection gets closed."""


def encode_remaining_length(length):
    """The fixed header's variable-length integer: 7 bits per byte, low group first."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError("remaining length %d outside 0..%d" % (length, MAX_REMAINING_LENGTH))
    out = bytearray()
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def decode_remaining_length(data, offset=0):
    """Return (length, offset just past it); MQTTProtocolError if truncated or over 4 bytes."""
    value = 0
    for index in range(4):
        if offset + index >= len(data):
            raise MQTTProtocolError("truncated remaining length")
        digit = data[offset + index]
        value |= (digit & 0x7F) << (7 * index)
        if not digit & 0x80:
            return value, offset + index + 1
    raise MQTTProtocolError("remaining length longer than 4 bytes")


def as_bytes(data):
    return data.encode() if isinstance(data, str) else data


def encode_str(text):
    """A length-prefixed MQTT string (UTF-8 if given a str); ValueError past 65535 bytes."""
    data = as_bytes(text)
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings are limited to 65535 bytes")
    return struct.pack(">H", len(data)) + data


def encode_packet(first_byte, *parts):
    """A whole packet (a bytearray): fixed header, then the parts back to back."""
    packet = bytearray((first_byte,))
    packet += encode_remaining_length(sum(len(part) for part in parts))
    for part in parts:
        packet += part
    return packet


def connect_packet(client_id, keepalive_s, clean_session=True, will=None, username=None,
                   password=None):
    """CONNECT; will is None or (topic, payload, qos, retain)."""
    flags = 0x02 if clean_session else 0
    fields = [encode_str(client_id)]
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        fields += (encode_str(topic), encode_str(message))
    if username is not None:
        flags |= 0x80
        fields.append(encode_str(username))
    if password is not None:
        flags |= 0x40
        fields.append(encode_str(password))
    return encode_packet(CONNECT, b"\x00\x04MQTT\x04", bytes((flags,)),
                         struct.pack(">H", keepalive_s), *fields)


def publish_packet(topic_field, payload, qos, retain, packet_id=0):
    """PUBLISH of an already encoded topic (see encode_str); packet_id only with QoS 1."""
    first = PUBLISH | qos << 1 | (1 if retain else 0)
    if not qos:
        return encode_packet(first, topic_field, payload)
    return encode_packet(first, topic_field, struct.pack(">H", packet_id), payload)


def subscribe_packet(packet_id, filter_field, qos):
    """SUBSCRIBE of one already encoded topic filter."""
    return encode_packet(SUBSCRIBE, struct.pack(">H", packet_id), filter_field, bytes((qos,)))


def puback_packet(packet_id):
    return struct.pack(">BBH", PUBACK, 2, packet_id)


def parse_connack(first, body):
    """Return session_present; MQTTConnectionRefused on a non-zero return code."""
    if first != CONNACK or len(body) != 2 or body[0] & 0xFE:
        raise MQTTProtocolError("expected CONNACK, got type 0x%02x with %d bytes"
                                % (first, len(body)))
    if body[1]:
        raise MQTTConnectionRefused(body[1])
    return bool(body[0] & 1)


def parse_ack(first, body):
    """The packet id a PUBACK or SUBACK answers, once its shape is checked."""
    if len(body) != (2 if first == PUBACK else 3):
        raise MQTTProtocolError("ack type 0x%02x with %d bytes" % (first, len(body)))
    if first == SUBACK and body[2] not in (0, 1, 2, 0x80):
        raise MQTTProtocolError("SUBACK return code 0x%02x" % body[2])
    return body[0] << 8 | body[1]


def publish_header(first, body):
    """Check an inbound PUBLISH (QoS 0 or 1) and return (topic, payload offset, retained,
    packet id or 0); the payload is body[offset:], left to slice only if it is kept."""
    qos = first >> 1 & 3
    if qos > 1:
        raise MQTTProtocolError("PUBLISH with QoS %d; only QoS 0 and 1 are subscribed" % qos)
    if len(body) < 2:
        raise MQTTProtocolError("PUBLISH without a topic")
    topic_end = 2 + (body[0] << 8 | body[1])
    payload_start = topic_end + 2 * qos
    if len(body) < payload_start:
        raise MQTTProtocolError("PUBLISH shorter than its topic and packet id")
    packet_id = (body[topic_end] << 8 | body[topic_end + 1]) if qos else 0
    if qos and not packet_id:
        raise MQTTProtocolError("QoS1 PUBLISH with packet id 0")
    try:
        topic = body[2:topic_end].decode()
    except UnicodeError:
        raise MQTTProtocolError("PUBLISH topic is not UTF-8") from None
    return topic, payload_start, bool(first & 1), packet_id
