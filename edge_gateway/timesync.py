"""The gateway's side of time sync: publish the site time (`nt/<site>/time`) for the nodes.

Sent every `interval_s`, and at once (coalesced) when `poke()` says a node came online, so a node
that just booted has the time within moments. QoS 0 and never retained: a late or replayed time
would be wrong, and the next one is never far. Nodes keep the least-delayed of the last few
(sensornode.timesync.Clock), so one message held up in transit does not matter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from sensornode import protocol

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
# Pokes closer together than this share one message (a fleet's births after a broker restart).
MIN_GAP_S = 0.2


class TimeBroadcaster:
    def __init__(self, client: mqtt.Client, site: str, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 < interval_s <= protocol.MAX_TIME_INTERVAL_S:
            raise ValueError(f"interval_s must be in (0, {protocol.MAX_TIME_INTERVAL_S}] s, "
                             f"got {interval_s!r}")
        self.client = client
        self.topic = protocol.site_topic(site, protocol.TIME)
        self.interval_s = interval_s
        self.clock = clock
        self.sent = 0  # messages handed to the client
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # start() and stop() may come from different threads
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Send now, then every interval_s, from a daemon thread, until stop(). Once stopped,
        a broadcaster stays stopped: start() does nothing (a late callback cannot revive it)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("time broadcaster already started")
            if self._stopping.is_set():
                return
            thread = threading.Thread(target=self._run, name="neoterra-time", daemon=True)
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            self._wake.set()
        if thread is not None:
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def poke(self) -> None:
        """Send soon (within MIN_GAP_S): a node came online and has no time yet."""
        self._wake.set()

    def publish(self) -> bool:
        """Send one time message now; False when the client is not connected (QoS 0 is not
        queued, and a queued time would be stale anyway)."""
        payload = protocol.encode_time(self.clock(), self.interval_s)
        info = self.client.publish(self.topic, payload, qos=0, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("time not sent: %s", mqtt.error_string(info.rc))
            return False
        self.sent += 1
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # a poke from here on means another message
            try:
                self.publish()
            except Exception:  # a bug here must not end time sync for good
                log.exception("could not publish the time")
            if self._stopping.wait(MIN_GAP_S):
                break
            self._wake.wait(max(0.0, self.interval_s - MIN_GAP_S))
