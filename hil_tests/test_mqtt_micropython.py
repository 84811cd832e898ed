"""The node's MQTT client under the real MicroPython interpreter, against a real mosquitto:
a command/ack round trip (from source and from the .mpy files we ship), the will on a crash,
unacknowledged publishes resent with DUP after a reconnect (through testkit's fault proxy), and
TLS with mbedTLS against a throwaway CA."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as paho_publish
import pytest

from hil_tests.target import compiled_firmware, micropython_binary
from testkit.mosquitto import Mosquitto, free_port
from testkit.procs import stop_process, wait_for
from testkit.proxy import FaultProxy
from testkit.tls import make_certificates
from testkit.watch import Watcher

REPO = Path(__file__).resolve().parent.parent

NODE_SCRIPT = r"""
import asyncio
import gc
import sys

gc.collect()
heap_start = gc.mem_alloc()
from sensornode.net.mqtt import MQTTClient

gc.collect()
heap_import = gc.mem_alloc() - heap_start
port = int(sys.argv[1])


async def roundtrip():
    # keepalive 1 s: the idle pause below outlasts the broker's 1.5 s limit, so only our
    # PINGREQs keep the link up.
    client = MQTTClient("mpy-roundtrip", "127.0.0.1", port, keepalive_s=1)
    inbox = []
    client.on_message = lambda topic, payload, retained: inbox.append((topic, payload, retained))
    gc.collect()
    before = gc.mem_alloc()
    await client.connect()
    gc.collect()
    print("HEAP import=%d connect=%d" % (heap_import, gc.mem_alloc() - before))
    print("GRANTED", await client.subscribe("nt/hil/n1/cmd", 1))
    print("READY")
    for _ in range(500):  # up to 10 s for the test's command
        if inbox:
            break
        await asyncio.sleep_ms(20)
    topic, payload, retained = inbox[0]
    print("GOT", topic, payload, retained)
    await asyncio.sleep_ms(1700)
    await client.publish("nt/hil/n1/ack", b"echo:" + payload, qos=1)
    print("STATS sent=%d received=%d pings=%d" % (
        client.stats["sent"], client.stats["received"], client.stats["pings"]))
    await client.disconnect()
    print("DONE", client.is_connected)


async def crash():
    client = MQTTClient("mpy-crash", "127.0.0.1", port,
                        will=("nt/hil/n1/status", b"offline", 1, True))
    await client.connect()
    await client.publish("nt/hil/n1/status", b"online", qos=1, retain=True)
    print("READY")
    await asyncio.sleep(30)  # the test kills us long before this


async def retransmit():
    # The test drops every PUBACK, then cuts the link once two were dropped.
    from sensornode.net.mqtt import MQTTTimeout

    client = MQTTClient("mpy-retransmit", "127.0.0.1", port, keepalive_s=5, clean_session=False)
    down = asyncio.Event()

    def lost(reason):
        print("DOWN", reason)
        down.set()

    client.on_disconnect = lost
    await client.connect()
    kept = None
    try:
        await client.publish("nt/hil/n1/telemetry", b"kept", qos=1, timeout_ms=300,
                             keep_on_timeout=True)
    except MQTTTimeout as exc:
        kept = exc.delivery
    print("KEPT", kept is not None and not kept.acked and not kept.abandoned)
    waiting = asyncio.create_task(client.publish("nt/hil/n1/telemetry", b"waited", qos=1,
                                                 timeout_ms=20000))
    print("PUBLISHING")
    await asyncio.wait_for(down.wait(), 20)
    await client.connect()
    print("RECONNECTED", client.session_present)
    await waiting
    print("ACKED %s retransmits=%d inflight=%d" % (
        await kept.wait(5000), client.stats["retransmits"], client.inflight))
    await client.disconnect()
    print("DONE")


async def tls():
    from sensornode.net.mqtt import MQTTConnectionError

    ca_path, other_ca_path = sys.argv[3], sys.argv[4]
    stranger = MQTTClient("mpy-tls-bad", "127.0.0.1", port, ssl={"cafile": other_ca_path})
    try:
        await stranger.connect()
        print("UNEXPECTED connect with the wrong CA")
    except MQTTConnectionError as exc:
        print("REFUSED", exc)
    with open(ca_path, "rb") as file:
        ca_pem = file.read()
    client = MQTTClient("mpy-tls", "127.0.0.1", port, ssl={"cadata": ca_pem})
    await client.connect()
    await client.publish("nt/hil/n1/status", b"tls-ok", qos=1)
    await client.disconnect()
    print("DONE")


MODES = {"roundtrip": roundtrip, "crash": crash, "retransmit": retransmit, "tls": tls}
asyncio.run(MODES[sys.argv[2]]())
"""


class Node:
    """The script above running under micropython; all output in one file (MicroPython prints
    uncaught tracebacks to stdout)."""

    def __init__(
        self,
        tmp_path: Path,
        micropypath: str,
        broker: Mosquitto,
        mode: str,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        script = tmp_path / "node_script.py"
        script.write_text(NODE_SCRIPT)
        self.output_path = tmp_path / f"{mode}.out"
        env = dict(os.environ, MICROPYPATH=micropypath)
        with self.output_path.open("wb") as sink:
            self.proc = subprocess.Popen(
                [micropython_binary(), str(script), str(port or broker.port), mode, *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def output(self) -> str:
        return self.output_path.read_text()

    def wait_output(self, marker: str, timeout: float = 10) -> None:
        try:
            wait_for(
                lambda: marker in self.output(),
                timeout,
                f"{marker!r} from micropython",
                proc=self.proc,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- micropython output ---\n{self.output()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.proc, sig=sig)


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Iterator[Watcher]:
    watching = Watcher(mosquitto, "nt/hil/#")
    yield watching
    watching.close()


@pytest.mark.parametrize("build", ["py", "mpy"])
def test_command_ack_roundtrip_under_micropython(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Watcher, build: str
) -> None:
    if build == "mpy":
        micropypath = f"{compiled_firmware()}:.frozen"
    else:
        micropypath = f"{REPO / 'firmware'}:.frozen"
    node = Node(tmp_path, micropypath, mosquitto, "roundtrip")
    try:
        node.wait_output("READY")
        paho_publish.single(
            "nt/hil/n1/cmd", b"ping", qos=1, hostname=mosquitto.host, port=mosquitto.port
        )
        assert watcher.next_payload() == b"ping"  # the watcher sees the command too
        assert watcher.next_payload(timeout=10) == b"echo:ping"
        node.wait_output("DONE")
        assert node.proc.wait(timeout=10) == 0, node.output()
    finally:
        node.stop()
    output = node.output()
    assert "GRANTED 1" in output
    assert "GOT nt/hil/n1/cmd b'ping' False" in output
    stats = re.search(r"STATS sent=(\d+) received=(\d+) pings=(\d+)", output)
    assert stats is not None, output
    assert (int(stats[1]), int(stats[2])) == (1, 1)
    assert int(stats[3]) >= 1  # the idle pause was bridged by PINGREQs
    assert "DONE False" in output
    heap = re.search(r"HEAP import=(\d+) connect=(\d+)", output)
    assert heap is not None, output
    print(f"micropython heap ({build}): import {heap[1]} B, connect {heap[2]} B")


def test_will_is_published_when_micropython_is_killed(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Watcher
) -> None:
    node = Node(tmp_path, f"{REPO / 'firmware'}:.frozen", mosquitto, "crash")
    try:
        node.wait_output("READY")
        assert watcher.next_payload() == b"online"
        assert node.stop(sig=signal.SIGKILL) == -signal.SIGKILL
    finally:
        node.stop()
    assert watcher.next_payload() == b"offline", node.output()


def test_unacked_publishes_are_resent_with_dup_after_reconnect_under_micropython(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Watcher
) -> None:
    with FaultProxy(mosquitto.port) as proxy:
        proxy.drop_puback()
        node = Node(
            tmp_path, f"{REPO / 'firmware'}:.frozen", mosquitto, "retransmit", port=proxy.port
        )
        try:
            node.wait_output("PUBLISHING")
            proxy.wait_for(lambda: proxy.stats.dropped_pubacks >= 2, 10, "two dropped PUBACKs")
            proxy.pass_through()
            proxy.cut()
            node.wait_output("DONE")
            assert node.proc.wait(timeout=10) == 0, node.output()
        finally:
            node.stop()
        records = [(p.connection, p.dup, p.packet_id, p.payload) for p in proxy.publishes()]
    output = node.output()
    assert "KEPT True" in output
    assert "RECONNECTED True" in output
    assert "ACKED True retransmits=2 inflight=0" in output
    (_, _, kept_id, _), (_, _, waited_id, _) = records[:2]
    assert records == [
        (1, False, kept_id, b"kept"),
        (1, False, waited_id, b"waited"),
        (2, True, kept_id, b"kept"),  # resent first, in order, same packet ids, DUP set
        (2, True, waited_id, b"waited"),
    ]
    # The broker delivered each twice (QoS1 at least once; the gateway dedups by seq).
    payloads = [watcher.next_payload() for _ in range(4)]
    assert sorted(payloads) == [b"kept", b"kept", b"waited", b"waited"]


def test_tls_with_a_ca_under_micropython(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "pki")
    tls_port = free_port()
    with Mosquitto(
        tmp_path / "broker", extra_config=certificates.mosquitto_listener(tls_port)
    ) as broker:
        witness = Watcher(broker, "nt/hil/#")
        try:
            node = Node(
                tmp_path,
                f"{REPO / 'firmware'}:.frozen",
                broker,
                "tls",
                port=tls_port,
                args=(str(certificates.ca), str(certificates.other_ca)),
            )
            try:
                node.wait_output("DONE", timeout=20)
                assert node.proc.wait(timeout=10) == 0, node.output()
            finally:
                node.stop()
            assert witness.next_payload() == b"tls-ok"
        finally:
            witness.close()
    refused = [line for line in node.output().splitlines() if line.startswith("REFUSED")]
    assert refused, node.output()
    assert "while sending CONNECT (TLS handshake)" in refused[0]
    assert "not correctly signed by the trusted CA" in refused[0]
