"""`neoterra gateway run --config FILE`: the ingest gateway plus the services the config asks
for, started together and stopped in reverse order.

- history: hourly downsampling and retention ([storage] *_retention_days), in its thread;
- fleet registry: nodes that go quiet without a last will are logged as stale (and back);
- rules ([rules]): evaluated every few seconds; each decision becomes a signed, audited
  command sent from a small worker pool, so a slow node never holds up the next evaluation;
- desired node configs: published retained on nt/<site>/<node>/config at each connect;
- Home Assistant ([homeassistant] enabled): discovery per node, a retained state document
  after each committed batch, HA's switches and numbers turned into audited commands;
- node refusals (forged, replayed, misdirected commands) copied into the audit log as they
  arrive;
- the Pi's own hardware ([local_hardware], edge_gateway.daemon_hw): the e-stop button and the
  site e-stop, the status LED, the master valve, the local I2C sensors.
Each service has its own Store (one SQLite connection per thread); a service that fails is
logged and the rest go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from gpiozero import Factory
from sensornode import protocol

from edge_gateway import audit
from edge_gateway.commands import CommandError, send_command
from edge_gateway.config import Config
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.daemon_hw import LocalSite, build_local_site
from edge_gateway.history import HistoryMaintainer, RetentionPolicy
from edge_gateway.homeassistant import NodeDescription
from edge_gateway.homeassistant_bridge import HomeAssistantBridge
from edge_gateway.homeassistant_state import LatestValues
from edge_gateway.ingest import Gateway
from edge_gateway.registry import StaleWatcher
from edge_gateway.rule_runner import RuleRunner
from edge_gateway.rules import Decision, Diffuse, Irrigate, parse_rules
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Event, Message, Status, Store

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30.0
COMMAND_WORKERS = 2
HA_IRRIGATE_S = 60  # what switching a pump on from Home Assistant asks for (the node caps it)
HA_DIFFUSE_S = 300


class Daemon:
    """Attach to a Gateway before it starts (`attach`), stop after it stopped (`stop`).

    `pin_factory` and `i2c_factory` are for [local_hardware]: None means the real ones, which
    exist only on a Raspberry Pi (elsewhere the constructor raises ConfigErrors saying so)."""

    def __init__(self, config: Config, gateway: Gateway, keys: KeyRing,
                 rule_interval_s: float = 10.0, clock: Callable[[], float] = time.time,
                 pin_factory: Factory | None = None,
                 i2c_factory: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.gateway = gateway
        self.clock = clock
        self.db_path = Path(gateway.db_path)
        # First: a config this machine cannot run fails before anything is started.
        self.local: LocalSite | None = build_local_site(config, self.db_path, pin_factory,
                                                        i2c_factory, clock)
        try:
            self._build_services(keys, rule_interval_s)
        except BaseException:
            if self.local is not None:
                self.local.stop()
            raise

    def _build_services(self, keys: KeyRing, rule_interval_s: float) -> None:
        config, clock = self.config, self.clock
        self._stores: list[Store] = []
        self.signer = Signer(self._store(), keys, clock)
        self._commands = ThreadPoolExecutor(COMMAND_WORKERS, thread_name_prefix="neoterra-cmd")
        self.maintainer = HistoryMaintainer(self._store(), RetentionPolicy(
            config.storage.raw_retention_days, config.storage.hourly_retention_days))
        stale = {name: float(node.stale_after_s) for name, node in config.nodes.items()}
        self.watcher = StaleWatcher(self._store(), per_node=stale)
        self.rules: RuleRunner | None = None
        if config.rules_table:
            flows = {name: config.plants[node.plant].flow_l_per_min
                     for name, node in config.nodes.items() if node.plant is not None}
            ruleset = parse_rules(dict(config.rules_table), known_nodes=frozenset(config.nodes),
                                  flow_l_per_min=flows)
            self.rules = RuleRunner(self._store(), ruleset, ZoneInfo(config.timezone),
                                    self.ask, rule_interval_s, stale, clock)
        self._commit_store = self._store()  # used by the writer thread's after-commit hook
        self.ha: HomeAssistantBridge | None = None
        self._ha_values = LatestValues()
        self._ha_births: dict[str, Status] = {}

    def _store(self) -> Store:
        store = Store(self.db_path)
        self._stores.append(store)
        return store

    # ---- lifecycle ----

    def attach(self) -> None:
        """Hook into the gateway and start the services (call before gateway.start)."""
        self.gateway.on_client.append(self._client_ready)
        self.gateway.on_connected.append(self._connected)
        self.gateway.after_commit.append(self._committed)
        audit.ensure_table(self._commit_store)
        self.maintainer.start()
        self.watcher.start()
        if self.rules is not None:
            self.rules.start()
        if self.local is not None:
            self.gateway.on_client.append(self.local.client_ready)
            self.gateway.on_connected.append(self.local.connected)
            self.gateway.after_commit.append(self.local.committed)
            self.local.start()
        log.info("daemon services: history, stale watch%s%s%s",
                 f", {len(self.rules.rules.rules)} rules" if self.rules else "",
                 ", Home Assistant" if self.config.homeassistant.enabled else "",
                 ", local hardware" if self.local is not None else "")

    def stop(self) -> None:
        """Stop the services (the gateway has stopped: nothing is committed any more)."""
        if self.rules is not None:
            self.rules.stop()
        if self.local is not None:
            self.local.stop()  # the master valve closes first
        self._commands.shutdown(wait=True, cancel_futures=True)
        self.watcher.stop()
        self.maintainer.stop()
        for store in self._stores:
            store.close()

    def run_forever(self) -> None:
        self.attach()
        try:
            self.gateway.run_forever()
        finally:
            self.stop()

    # ---- commands ----

    def ask(self, decision: Decision) -> None:
        """A rule's irrigate or diffuse, sent in the background (the audit log has its fate)."""
        action = decision.action
        if isinstance(action, Irrigate):
            self.command(action.node, "irrigate", {"seconds": action.seconds},
                         decision.requested_by)
        elif isinstance(action, Diffuse):
            self.command(action.node, "diffuse", {"channel": action.channel,
                                                  "duty_pct": action.duty_pct,
                                                  "seconds": action.seconds},
                         decision.requested_by)
        else:
            log.warning("rule %s: %s has no command on the wire yet; not sent", decision.rule,
                        type(action).__name__.lower())

    def command(self, node: str, action: str, params: dict[str, Any], requested_by: str) -> None:
        self._commands.submit(self._send, node, action, params, requested_by)

    def _send(self, node: str, action: str, params: dict[str, Any], requested_by: str) -> None:
        broker = self.config.broker
        try:
            ack = send_command(self.gateway.broker_host, self.gateway.broker_port,
                               self.config.site, node, action, params, COMMAND_TIMEOUT_S,
                               signer=self.signer, requested_by=requested_by,
                               username=broker.username, password=broker.password)
        except CommandError as exc:
            log.warning("%s for %s by %s failed: %s", action, node, requested_by, exc)
            return
        level = logging.INFO if ack["ok"] else logging.WARNING
        log.log(level, "%s for %s by %s: %s %s", action, node, requested_by, ack["result"],
                ack["detail"])

    # ---- gateway hooks ----

    def _client_ready(self, client: mqtt.Client) -> None:
        if self.config.homeassistant.enabled:
            self.ha = HomeAssistantBridge(client, self.config.site, self._ha_command,
                                          self.config.homeassistant.prefix)
            self.ha.attach()

    def _connected(self, client: mqtt.Client) -> None:
        for desired in desired_node_configs(self.config).values():
            topic = protocol.node_topic(self.config.site, desired.node, protocol.CONFIG)
            client.publish(topic, desired.payload(), qos=1, retain=True)
        if self.ha is not None:
            self.ha.on_connect()

    def _committed(self, messages: list[Message]) -> None:
        if any(isinstance(m, Event) and m.kind == "fault" and m.name == "cmd"
               for m in messages):
            audit.import_node_refusals(self._commit_store)
        if self.ha is not None:
            self._update_home_assistant(messages)

    def _update_home_assistant(self, messages: list[Message]) -> None:
        assert self.ha is not None
        for message in messages:
            if isinstance(message, Status) and message.online:
                self._ha_births[message.node] = message
        changed = self._ha_values.apply(messages)
        for node in sorted(changed | {m.node for m in messages if isinstance(m, Status)}):
            birth = self._ha_births.get(node)
            if birth is not None:
                self.ha.publish_node(NodeDescription(
                    self.config.site, node, birth.role, birth.board, birth.fw,
                    quantities=self._ha_values.quantities(node)))
            document = self._ha_values.document(node)
            if document is not None:
                self.ha.publish_state(node, document)

    def _ha_command(self, node: str, entity: str, value: object) -> None:
        if entity == "pump":
            if value is True:
                self.command(node, "irrigate", {"seconds": HA_IRRIGATE_S}, "homeassistant")
            else:
                log.warning("Home Assistant switched %s's pump off: the node stops it at the "
                            "end of its run (no stop command exists yet)", node)
        elif entity.startswith("diffuser_") and isinstance(value, int):
            channel = int(entity.rsplit("_", 1)[1])
            self.command(node, "diffuse", {"channel": channel, "duty_pct": value,
                                           "seconds": HA_DIFFUSE_S}, "homeassistant")
