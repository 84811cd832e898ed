"""Send one command to a node and wait for its ack, over a short-lived MQTT connection.

Commands are QoS1 and never retained: a retained command would be obeyed again by a node that
reboots hours later. The ack topic is subscribed (SUBACK received) before the command goes
out, so a fast node's ack cannot slip past us.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sensornode import protocol

KEEPALIVE_S = 30


class CommandError(Exception):
    """The command could not be delivered or answered; the message says what to check."""


class InvalidCommand(CommandError, ValueError):
    """Refused before sending: the message names the bad parameter."""


class CommandTimeout(CommandError, TimeoutError):
    pass


def build_command(
    site: str, node: str, action: str, params: dict[str, Any], cmd_id: str, ts: float
) -> tuple[str, bytes]:
    """Topic and payload of a command, checked with the same decoder the node runs."""
    try:
        topic = protocol.node_topic(site, node, protocol.CMD)
        payload = protocol.encode_command(cmd_id, action, params, ts)
        protocol.decode_command(payload)
    except protocol.ProtocolError as exc:
        raise InvalidCommand(str(exc)) from exc
    return topic, payload


def send_command(
    host: str,
    port: int,
    site: str,
    node: str,
    action: str,
    params: dict[str, Any],
    timeout_s: float,
    *,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Publish the command and return the node's first ack for it (protocol.decode_ack form).

    `timeout_s` bounds the whole exchange, connecting included. A refusal by the node is an
    ack with ok=False, returned like any other; the caller decides what it means.
    """
    if not timeout_s > 0:
        raise InvalidCommand(f"timeout: must be more than 0 seconds, got {timeout_s!r}")
    cmd_id = secrets.token_hex(8)
    topic, payload = build_command(site, node, action, params, cmd_id, time.time())
    ack_topic = protocol.node_topic(site, node, protocol.ACK)
    deadline = time.monotonic() + timeout_s
    broker = f"{host}:{port}"

    connected = threading.Event()
    subscribed = threading.Event()
    refusals: list[str] = []
    acks: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            refusals.append(f"broker {broker} refused the connection: {reason_code}")
        connected.set()

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        if any(code.is_failure for code in reason_codes):
            refusals.append(f"broker {broker} refused the subscription to {ack_topic}")
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = protocol.decode_ack(bytes(msg.payload))
        except protocol.ProtocolError:
            return  # someone else's garbage; the gateway dead-letters it
        if ack["id"] == cmd_id:
            acks.put(ack)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"neoterra-cmd-{cmd_id}",
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=KEEPALIVE_S)
    except OSError as exc:
        raise CommandError(f"cannot reach the MQTT broker at {broker}: {exc}") from exc
    client.loop_start()
    try:
        _wait(connected, deadline, refusals, f"no answer from the MQTT broker at {broker}")
        client.subscribe(ack_topic, qos=1)
        _wait(subscribed, deadline, refusals, f"the MQTT broker at {broker} did not confirm "
              f"the subscription to {ack_topic}")
        client.publish(topic, payload, qos=1, retain=False)
        try:
            return acks.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise CommandTimeout(
                f"no ack from node {node} within {timeout_s:g} s — is it online? "
                "check `neoterra nodes`"
            ) from None
    finally:
        client.disconnect()
        client.loop_stop()


def _wait(event: threading.Event, deadline: float, refusals: list[str], what: str) -> None:
    if not event.wait(max(0.0, deadline - time.monotonic())):
        raise CommandTimeout(what)
    if refusals:
        raise CommandError(refusals[0])
