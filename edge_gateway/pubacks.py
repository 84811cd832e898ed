"""Acknowledge a committed batch's QoS1 deliveries to paho at once (manual_ack), from the
writer thread.

paho's public `Client.ack(mid, qos)` queues one PUBACK packet per call and writes a byte to
its socket pair each time to wake its network thread, which then sends each packet with its
own send(): per delivery, a syscall in the writer and a wake-up and a syscall in paho's thread,
each one a GIL hand-over between the two. `ack_all` queues the batch's PUBACKs, the very same
bytes in the same order, as one outgoing packet through the queue `ack()` itself uses
(`Client._packet_queue`, paho 2.x; measured in bench/ingest.py). That queue is a deque, appended
to under the GIL, which is why `ack()` and `publish()` may be called from any thread; paho
writes it out in order and handles partial sends. If a paho version does not have that method
with that signature, `ack_all` falls back to `ack()` per delivery.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Sequence

import paho.mqtt.client as mqtt

PUBACK = 0x40  # MQTT 3.1.1 control packet type 4, flags 0
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, packet id


def _can_queue_packets() -> bool:
    queue_packet = getattr(mqtt.Client, "_packet_queue", None)
    if queue_packet is None:
        return False
    names = list(inspect.signature(queue_packet).parameters)
    return names[:5] == ["self", "command", "packet", "mid", "qos"]


QUEUE_PACKETS = _can_queue_packets()


def puback_bytes(mids: Sequence[int]) -> bytes:
    return b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])


def ack_all(client: mqtt.Client, mids: Sequence[int]) -> None:
    """PUBACK every QoS1 delivery in `mids`, in that order."""
    if not mids:
        return
    if QUEUE_PACKETS:
        client._packet_queue(PUBACK, puback_bytes(mids), 0, 0)
    else:
        for mid in mids:
            client.ack(mid, 1)
