"""The node agents' OVSDB client (imperative shell): ovsdbapp over the node's ovsdb-server.

One connection per agent (ovsdbapp keeps python-ovs's IDL in step on its own thread, and
reconnects after an OVS restart). `apply` writes node.bridge_specs in one transaction:
bridges, ports and interfaces are added if missing and their columns set (maps merged), so
running it again changes nothing; controllers are replaced only when they differ (a new
Controller row would drop the OpenFlow connection).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

from ananta.node import BridgeSpec

LOG = logging.getLogger("ananta.ovsdb")


class OvsdbUnavailable(Exception):
    """ovsdb-server could not be reached, or refused the transaction."""


class NodeOvsdb:
    def __init__(self, rundir: str, timeout: float = 10.0):
        self.endpoint = f"unix:{os.path.join(rundir, 'db.sock')}"
        self.timeout = timeout
        self._api: impl_idl.OvsdbIdl | None = None

    def api(self) -> impl_idl.OvsdbIdl:
        if self._api is None:
            try:
                idl = connection.OvsdbIdl.from_server(self.endpoint, "Open_vSwitch")
                conn = connection.Connection(idl=idl, timeout=self.timeout)
                self._api = impl_idl.OvsdbIdl(conn)
            except Exception as exc:  # ovsdbapp raises plain Exceptions when it cannot connect
                raise OvsdbUnavailable(f"cannot reach {self.endpoint}: {exc}") from exc
        return self._api

    def _run(self, command: Any) -> Any:
        try:
            return command.execute(check_error=True)
        except Exception as exc:
            raise OvsdbUnavailable(f"{self.endpoint}: {exc}") from exc

    def bridges(self) -> set[str]:
        return set(self._run(self.api().list_br()))

    def ports(self, bridge: str) -> set[str]:
        return set(self._run(self.api().list_ports(bridge)))

    def connected(self) -> bool:
        """Whether the IDL is connected now (its copy of the database is current): python-ovs
        3.1's Idl says so only through its JSON-RPC session."""
        session = getattr(self.api().ovsdb_connection.idl, "_session", None)
        return session is None or bool(session.is_connected())

    def apply(self, specs: Sequence[BridgeSpec], options: dict[str, str] | None = None) -> None:
        """The bridges of `specs`, and `options` in ovs-vswitchd's other_config (merged with
        what is there), in one transaction."""
        api = self.api()
        present = self.bridges()
        controllers = {b.name: (sorted(self._run(api.get_controller(b.name)))
                                if b.name in present else None) for b in specs}
        try:
            with api.transaction(check_error=True) as txn:
                for b in specs:
                    txn.add(api.add_br(b.name, may_exist=True,
                                       datapath_type=b.columns.get("datapath_type")))
                    txn.add(api.db_set("Bridge", b.name, *b.columns.items()))
                    if controllers[b.name] != sorted(b.controllers):
                        txn.add(api.set_controller(b.name, list(b.controllers)))
                    for port in b.ports:
                        txn.add(api.add_port(b.name, port.name, may_exist=True))
                        txn.add(api.db_set("Interface", port.name, *port.columns.items()))
                    if b.local:
                        txn.add(api.db_set("Interface", b.name, *b.local.items()))
                    for table_id, columns in b.flow_tables.items():
                        row = txn.add(api.db_create("Flow_Table", **columns))
                        txn.add(api.db_set("Bridge", b.name, ("flow_tables", {table_id: row})))
                if options:
                    txn.add(api.db_set("Open_vSwitch", ".", ("other_config", options)))
        except Exception as exc:
            raise OvsdbUnavailable(f"{self.endpoint}: bootstrap refused: {exc}") from exc

    def ct_zones_match(self, datapath_type: str, zones: int, timeouts: dict[str, int]) -> bool:
        """Whether the datapath has zones 1..`zones` and gives the first and last the
        `timeouts` policy (`set_ct_zones` writes them all at once; reading every one of
        thousands of rows through the IDL costs a third of a second)."""
        api = self.api()
        try:
            ovs = next(iter(api.tables["Open_vSwitch"].rows.values()))
        except (KeyError, StopIteration) as exc:
            raise OvsdbUnavailable(f"{self.endpoint}: no Open_vSwitch row") from exc
        datapath = ovs.datapaths.get(datapath_type)
        rows = datapath.ct_zones if datapath is not None else {}  # (converted at each read)
        if set(rows) != set(range(1, zones + 1)):
            return False
        return all(rows[z].timeout_policy and dict(rows[z].timeout_policy[0].timeouts) == timeouts
                   for z in (1, zones))

    def set_ct_zones(self, datapath_type: str, zones: int, timeouts: dict[str, int]) -> None:
        """Give zones 1..`zones` of the datapath one timeout policy, in one transaction (a new
        Datapath row replaces the old one, whose zones OVSDB then collects)."""
        api = self.api()
        try:
            with api.transaction(check_error=True) as txn:
                policy = txn.add(api.db_create("CT_Timeout_Policy", timeouts=timeouts))
                rows = {z: txn.add(api.db_create("CT_Zone", timeout_policy=policy))
                        for z in range(1, zones + 1)}
                datapath = txn.add(api.db_create("Datapath", datapath_version="0",
                                                 ct_zones=rows))
                txn.add(api.db_set("Open_vSwitch", ".", ("datapaths",
                                                         {datapath_type: datapath})))
        except Exception as exc:
            raise OvsdbUnavailable(f"{self.endpoint}: conntrack zones refused: {exc}") from exc
