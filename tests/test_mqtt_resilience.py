"""The node's MQTT client when the network or the broker fails (issue 4): the CPython build of the
client through testkit.proxy.FaultProxy to a real mosquitto, with a paho Watcher as the witness
of what the broker delivered and the proxy's record of what crossed the wire."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sensornode.net.mqtt import (
    Delivery,
    MQTTClient,
    MQTTConnectionError,
    MQTTTimeout,
)

from testkit.mosquitto import Mosquitto, free_port
from testkit.proxy import FaultProxy
from testkit.tls import Certificates, make_certificates
from testkit.watch import Watcher
from tests.test_mqtt_client import (  # shared helpers and fixtures of the client's own tests
    Recorder,
    eventually,
    new_client,
    paho_send,
    proxy,
    run_async,
    watch,
)

__all__ = ["proxy", "watch"]  # fixtures, imported for pytest

TOPIC = "nt/s1/n1/telemetry"


async def lose_link(proxy: FaultProxy, seen: Recorder) -> None:
    """Restore the path (PUBACKs flow again) and reset the connection, as a crash of the path
    would; returns once the client has reported the loss."""
    count = len(seen.disconnects)
    proxy.pass_through()
    proxy.cut()
    await eventually(lambda: len(seen.disconnects) > count, "on_disconnect")


async def dropped(proxy: FaultProxy, count: int) -> None:
    await proxy.until(lambda: proxy.stats.dropped_pubacks >= count, 5, f"{count} dropped PUBACKs")


def sent(proxy: FaultProxy, connection: int | None = None) -> list[tuple[bool, int, bytes]]:
    """(DUP, packet id, payload) of each PUBLISH to TOPIC that crossed the proxy."""
    return [(p.dup, p.packet_id, p.payload) for p in proxy.publishes()
            if p.topic == TOPIC and connection in (None, p.connection)]


# ---- half-open links -------------------------------------------------------------------------


@run_async
async def test_blackhole_is_detected_within_1_5_keepalives_and_the_path_back_reconnects(
    proxy: FaultProxy, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, TOPIC)
    client = new_client(proxy.port, keepalive_s=1, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    await client.publish(TOPIC, b"before", qos=1)
    proxy.blackhole()
    blackholed_at = time.monotonic()
    await eventually(lambda: seen.disconnects, "half-open detection", timeout=3)
    assert seen.disconnected_at is not None
    assert seen.disconnected_at - blackholed_at <= 1.5 * 1 + 0.25
    assert seen.disconnects == ["no answer to PINGREQ within 500 ms"]
    with pytest.raises(MQTTConnectionError):
        await client.publish(TOPIC, b"offline", qos=1)
    # While the path is dead a connect gives up at its deadline instead of hanging.
    with pytest.raises(MQTTTimeout, match="CONNACK"):
        await client.connect(timeout_ms=300)
    proxy.pass_through()
    await client.connect()
    await client.publish(TOPIC, b"after", qos=1)
    await eventually(lambda: b"after" in watcher.payloads(), "the publish after the outage")
    assert watcher.payloads() == [b"before", b"after"]
    await client.disconnect()


# ---- retransmission with DUP -----------------------------------------------------------------


@run_async
async def test_unacked_publish_is_resent_with_dup_after_reconnect_and_the_call_completes(
    proxy: FaultProxy, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, TOPIC)
    client = new_client(proxy.port, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    publish = asyncio.create_task(client.publish(TOPIC, b"reading-1", qos=1, timeout_ms=8000))
    await dropped(proxy, 1)
    await lose_link(proxy, seen)
    assert not publish.done()  # the session owns the message: its caller keeps waiting
    assert client.inflight == 1
    await client.connect()
    await publish  # returns with the PUBACK of the retransmission
    [(dup, packet_id, payload)] = sent(proxy, connection=1)
    assert (dup, payload) == (False, b"reading-1")
    assert sent(proxy, connection=2) == [(True, packet_id, b"reading-1")]  # same id, DUP set
    assert (client.stats["retransmits"], client.stats["sent"], client.inflight) == (1, 1, 0)
    # The broker got it twice: that is QoS1 (the gateway drops the duplicate by seq).
    await eventually(lambda: len(watcher.payloads()) == 2, "both copies at the witness")
    assert watcher.payloads() == [b"reading-1", b"reading-1"]
    await client.disconnect()


@run_async
async def test_every_unacked_publish_is_resent_in_order_before_new_ones(
    proxy: FaultProxy,
) -> None:
    client = new_client(proxy.port, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    waiting = [asyncio.create_task(client.publish(TOPIC, b"m%d" % n, qos=1, timeout_ms=8000))
               for n in range(3)]
    await dropped(proxy, 3)
    await lose_link(proxy, seen)
    await client.connect()
    await client.publish(TOPIC, b"new", qos=1)
    await asyncio.gather(*waiting)
    first_ids = [packet_id for _, packet_id, _ in sent(proxy, connection=1)]
    assert [(dup, payload) for dup, _, payload in sent(proxy, connection=2)] == [
        (True, b"m0"), (True, b"m1"), (True, b"m2"), (False, b"new")
    ]
    assert [packet_id for _, packet_id, _ in sent(proxy, connection=2)][:3] == first_ids
    await client.disconnect()


@run_async
async def test_publish_kept_on_timeout_reports_its_ack_through_its_delivery(
    proxy: FaultProxy,
) -> None:
    client = new_client(proxy.port, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    with pytest.raises(MQTTTimeout, match="PUBACK") as timed_out:
        await client.publish(TOPIC, b"kept", qos=1, timeout_ms=300, keep_on_timeout=True)
    delivery = timed_out.value.delivery
    assert isinstance(delivery, Delivery)
    assert not delivery.acked and not delivery.abandoned
    assert (client.inflight, client.stats["kept"]) == (1, 1)
    await dropped(proxy, 1)
    await lose_link(proxy, seen)
    assert not delivery.acked and client.inflight == 1  # a link loss does not end it either
    await client.connect()
    assert await delivery.wait(5000) is True  # certainly acked: the outbox may drop it now
    assert delivery.retransmits == 1
    assert (client.inflight, client.stats["sent"], client.stats["retransmits"]) == (0, 1, 1)
    assert [dup for dup, _, _ in sent(proxy)] == [False, True]
    await client.disconnect()


@run_async
async def test_publish_timing_out_by_default_is_withdrawn_not_resent(proxy: FaultProxy) -> None:
    client = new_client(proxy.port, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    with pytest.raises(MQTTTimeout, match="PUBACK") as timed_out:
        await client.publish(TOPIC, b"withdrawn", qos=1, timeout_ms=300)
    assert timed_out.value.delivery is None
    assert client.inflight == 0
    await dropped(proxy, 1)
    await lose_link(proxy, seen)
    await client.connect()
    await client.publish(TOPIC, b"next", qos=1)
    assert [(dup, payload) for dup, _, payload in sent(proxy)] == [
        (False, b"withdrawn"), (False, b"next")
    ]
    assert client.stats["retransmits"] == 0
    await client.disconnect()


@run_async
async def test_clean_session_fails_waiters_on_link_loss_and_resends_nothing(
    proxy: FaultProxy,
) -> None:
    client = new_client(proxy.port)  # clean_session=True
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    with pytest.raises(MQTTTimeout) as timed_out:
        await client.publish(TOPIC, b"kept", qos=1, timeout_ms=300, keep_on_timeout=True)
    delivery = timed_out.value.delivery
    assert delivery is not None
    waiting = asyncio.create_task(client.publish(TOPIC, b"waiting", qos=1, timeout_ms=8000))
    await dropped(proxy, 2)
    await lose_link(proxy, seen)
    with pytest.raises(MQTTConnectionError, match="connection lost"):
        await waiting
    assert delivery.abandoned and not delivery.acked
    assert await delivery.wait(0) is False
    assert (client.stats["kept"], client.stats["abandoned"], client.inflight) == (1, 1, 0)
    await client.connect()
    await client.publish(TOPIC, b"next", qos=1)
    assert [payload for _, _, payload in sent(proxy)] == [b"kept", b"waiting", b"next"]
    assert client.stats["retransmits"] == 0
    await client.disconnect()


@run_async
async def test_kept_publishes_stay_within_the_inflight_window(proxy: FaultProxy) -> None:
    client = new_client(proxy.port, clean_session=False)
    client.INFLIGHT_SLOTS = 2
    seen = Recorder(client)
    await client.connect()
    proxy.drop_puback()
    deliveries: list[Any] = []
    for number in range(2):
        with pytest.raises(MQTTTimeout) as timed_out:
            await client.publish(TOPIC, b"%d" % number, qos=1, timeout_ms=200,
                                 keep_on_timeout=True)
        deliveries.append(timed_out.value.delivery)
    with pytest.raises(MQTTTimeout, match="free in-flight slot") as no_slot:
        await client.publish(TOPIC, b"no room", qos=1, timeout_ms=200, keep_on_timeout=True)
    assert no_slot.value.delivery is None  # nothing was kept: nothing was sent
    assert client.inflight == 2
    await dropped(proxy, 2)
    await lose_link(proxy, seen)
    await client.connect()
    assert [await delivery.wait(5000) for delivery in deliveries] == [True, True]
    await client.publish(TOPIC, b"room again", qos=1)
    assert [payload for _, _, payload in sent(proxy, connection=1)] == [b"0", b"1"]
    await client.disconnect()


# ---- broker restart --------------------------------------------------------------------------


@run_async
async def test_persistent_session_keeps_its_subscription_across_a_broker_restart(
    mosquitto: Mosquitto,
) -> None:
    client = MQTTClient("node-restart", mosquitto.host, mosquitto.port, clean_session=False)
    seen = Recorder(client)
    await client.connect()
    assert client.session_present is False
    await client.subscribe("nt/s1/n1/cmd", qos=1)
    await asyncio.to_thread(mosquitto.restart)  # SIGTERM: mosquitto saves its sessions
    await eventually(lambda: seen.disconnects, "on_disconnect")
    await paho_send(mosquitto, "nt/s1/n1/cmd", b"while away")  # queued for our session
    await client.connect()
    assert client.session_present is True
    await eventually(lambda: seen.messages, "the message queued while away")
    await paho_send(mosquitto, "nt/s1/n1/cmd", b"live")  # no new SUBSCRIBE was sent
    await eventually(lambda: len(seen.messages) == 2, "the live message")
    assert [payload for _, payload, _ in seen.messages] == [b"while away", b"live"]
    await client.disconnect()


# ---- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, certificates: Certificates) -> Iterator[tuple[Mosquitto, int]]:
    """A mosquitto with a plain listener (its .port) and a TLS one (the int)."""
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "tls-broker",
                       extra_config=certificates.mosquitto_listener(tls_port))
    broker.start()
    try:
        yield broker, tls_port
    finally:
        broker.stop()


def der(pem_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


CA_FORMS: dict[str, Callable[[Certificates], Any]] = {
    "cadata PEM": lambda c: {"cadata": c.ca.read_bytes()},
    "cadata DER": lambda c: {"cadata": der(c.ca)},
    "cafile": lambda c: {"cafile": str(c.ca)},
    "bundle": lambda c: {"cadata": c.other_ca.read_bytes() + c.ca.read_bytes()},
    "SSLContext": lambda c: ssl.create_default_context(cafile=str(c.ca)),
}


@pytest.mark.parametrize("form", list(CA_FORMS))
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@run_async
async def test_tls_with_the_right_ca_carries_mqtt(
    tls_broker: tuple[Mosquitto, int], certificates: Certificates, form: str, host: str
) -> None:
    _, tls_port = tls_broker
    client = new_client(tls_port, host=host, ssl=CA_FORMS[form](certificates))
    seen = Recorder(client)
    await client.connect()
    await client.subscribe("nt/s1/n1/cmd", qos=1)
    await client.publish("nt/s1/n1/cmd", b"over TLS", qos=1)
    await eventually(lambda: seen.messages, "the message over TLS")
    assert seen.messages == [("nt/s1/n1/cmd", b"over TLS", False)]
    await client.disconnect()


@pytest.mark.parametrize(
    ("ca", "server_hostname", "message"),
    [
        ("other_ca", None, "certificate verify failed"),
        ("ca", "broker.example", "certificate verify failed"),  # issued to localhost only
    ],
)
@run_async
async def test_tls_refuses_a_broker_the_ca_does_not_vouch_for(
    tls_broker: tuple[Mosquitto, int], certificates: Certificates, ca: str,
    server_hostname: str | None, message: str
) -> None:
    _, tls_port = tls_broker
    client = new_client(tls_port, ssl={"cafile": str(getattr(certificates, ca))},
                        server_hostname=server_hostname)
    started = time.monotonic()
    with pytest.raises(MQTTConnectionError, match="while opening TLS connection") as refused:
        await client.connect(timeout_ms=3000)
    assert message in str(refused.value)
    assert time.monotonic() - started < 1.5  # refused, not timed out
    assert not client.is_connected


@run_async
async def test_tls_to_a_plain_listener_fails_fast(
    tls_broker: tuple[Mosquitto, int], certificates: Certificates
) -> None:
    broker, _ = tls_broker
    client = new_client(broker.port, ssl={"cafile": str(certificates.ca)})
    started = time.monotonic()
    with pytest.raises(MQTTConnectionError):
        await client.connect(timeout_ms=3000)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "needs the CA"),
        ({"cadata": b""}, "needs the CA"),
        ({"cadata": b"not a certificate"}, "invalid CA certificate"),
        ({"cadata": b"-----BEGIN CERTIFICATE-----\nAAAA"}, "without its END line"),
        ({"verify": False}, "unknown TLS parameter"),
    ],
)
def test_bad_tls_parameters_fail_at_construction(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MQTTClient("n1", "127.0.0.1", 8883, ssl=params)
