"""Send one signed command to a node and wait for its ack, over a short-lived MQTT
connection, keeping the audit log of it.

Commands are QoS1 and never retained: a retained command would be obeyed again by a node that
reboots hours later. Each is signed with the node's key and a fresh counter (edge_gateway.
signing), so the node can refuse forgeries and replays. The ack topic is subscribed (SUBACK
received) before the command goes out, so a fast node's ack cannot slip past us. The audit
row (edge_gateway.audit) is written before connecting and updated as the command goes out and
as the ack, a refusal or the timeout comes.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sensornode import protocol

from edge_gateway import audit
from edge_gateway.signing import KeyFileError, Signer

KEEPALIVE_S = 30
EXPIRY_MARGIN_S = 30.0  # node and gateway clocks may differ by this much


class CommandError(Exception):
    """The command could not be delivered or answered; the message says what to check."""


class InvalidCommand(CommandError, ValueError):
    """Refused before sending: the message names the bad parameter."""


class CommandTimeout(CommandError, TimeoutError):
    pass


def check_command(site: str, node: str, action: str, params: dict[str, Any]) -> str:
    """The command's topic, once the same decoder the node runs has accepted the command."""
    try:
        topic = protocol.node_topic(site, node, protocol.CMD)
        probe = protocol.encode_command("check", action, params, time.time(), node, 1)
        protocol.decode_command(probe)
    except protocol.ProtocolError as exc:
        raise InvalidCommand(str(exc)) from exc
    return topic


def send_command(
    host: str,
    port: int,
    site: str,
    node: str,
    action: str,
    params: dict[str, Any],
    timeout_s: float,
    *,
    signer: Signer,
    requested_by: str,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Sign and publish the command, return the node's first ack for it (protocol.decode_ack
    form), and keep the audit log in `signer.store` of who (`requested_by`: a user name or
    rule:<name>) asked for what and what came of it.

    `timeout_s` bounds the whole exchange, connecting included. A refusal by the node is an
    ack with ok=False, returned like any other; the caller decides what it means.
    """
    if not timeout_s > 0:
        raise InvalidCommand(f"timeout: must be more than 0 seconds, got {timeout_s!r}")
    try:
        audit.check_requester(requested_by)
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from exc
    topic = check_command(site, node, action, params)
    cmd_id = secrets.token_hex(8)
    try:
        now = time.time()
        # Stale after the exchange could have ended: a command held up somewhere (a broker
        # queue, a reconnecting node) is refused rather than obeyed late.
        counter, payload = signer.sign(node, cmd_id, action, params, now,
                                       expires=round(now + timeout_s + EXPIRY_MARGIN_S, 3))
        protocol.decode_command(payload)  # what the node will decode, counter included
    except (KeyFileError, protocol.ProtocolError) as exc:
        raise InvalidCommand(str(exc)) from exc
    audit.ensure_table(signer.store)
    row = audit.record(signer.store, requested_by, node, action, params, cmd_id=cmd_id,
                       counter=counter, detail=f"connecting to the MQTT broker at {host}:{port}")
    published: list[bool] = []

    def mark_sent() -> None:
        audit.update(signer.store, row, audit.SENT)
        published.append(True)

    try:
        ack = _exchange(host, port, site, node, cmd_id, topic, payload, timeout_s, mark_sent,
                        username, password)
    except CommandTimeout as exc:
        audit.update(signer.store, row, audit.TIMEOUT if published else audit.NOT_SENT, str(exc))
        raise
    except CommandError as exc:
        audit.update(signer.store, row, audit.NOT_SENT, str(exc))
        raise
    audit.update(signer.store, row, audit.result_of_ack(ack), ack["detail"])
    return ack


def _exchange(host: str, port: int, site: str, node: str, cmd_id: str, topic: str,
              payload: bytes, timeout_s: float, on_published: Callable[[], None],
              username: str | None, password: str | None) -> dict[str, Any]:
    """Connect, subscribe to the acks, publish, wait for the ack of `cmd_id`."""
    ack_topic = protocol.node_topic(site, node, protocol.ACK)
    deadline = time.monotonic() + timeout_s
    broker = f"{host}:{port}"

    subscribed = threading.Event()
    refusals: list[str] = []
    acks: queue.Queue[dict[str, Any]] = queue.Queue()

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

    def setup(client: mqtt.Client) -> None:
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    client = connect(host, port, f"neoterra-cmd-{cmd_id}", username, password, deadline, setup)
    try:
        client.subscribe(ack_topic, qos=1)
        _wait(subscribed, deadline, refusals, f"the MQTT broker at {broker} did not confirm "
              f"the subscription to {ack_topic}")
        client.publish(topic, payload, qos=1, retain=False)
        on_published()
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


def connect(host: str, port: int, client_id: str, username: str | None, password: str | None,
            deadline: float, setup: Callable[[mqtt.Client], None] | None = None) -> mqtt.Client:
    """A short-lived paho client (clean session), connected and running by `deadline`, or
    CommandError / CommandTimeout. `setup` adds the caller's callbacks before the connect; the
    caller disconnects and stops its loop when done."""
    broker = f"{host}:{port}"
    connected = threading.Event()
    refusals: list[str] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            refusals.append(f"broker {broker} refused the connection: {reason_code}")
        connected.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                         protocol=mqtt.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    if setup is not None:
        setup(client)
    try:
        client.connect(host, port, keepalive=KEEPALIVE_S)
    except OSError as exc:
        raise CommandError(f"cannot reach the MQTT broker at {broker}: {exc}") from exc
    client.loop_start()
    try:
        _wait(connected, deadline, refusals, f"no answer from the MQTT broker at {broker}")
    except CommandError:
        client.disconnect()
        client.loop_stop()
        raise
    return client


def _wait(event: threading.Event, deadline: float, refusals: list[str], what: str) -> None:
    if not event.wait(max(0.0, deadline - time.monotonic())):
        raise CommandTimeout(what)
    if refusals:
        raise CommandError(refusals[0])
