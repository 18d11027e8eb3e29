"""`ananta-manager --config FILE`: one Ananta Manager replica.

It joins the Raft cluster (pysyncobj), serves the REST API (FastAPI on uvicorn, in a thread)
and runs the os-ken OpenFlow controller (the main thread) that programs every switch while
this replica is the Raft leader.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading

from ananta.agent import agent_arguments, load_or_report
from ananta.controller.config import ManagerConfig, load_manager_config, read_password
from ananta.controller.service import ReplicaService


def serve_api(config: ManagerConfig, service: ReplicaService) -> None:
    import uvicorn

    from ananta.controller.api import create_app

    host, _, port = config.me.api.rpartition(":")
    # uvicorn leaves signal handling alone outside the main thread (os-ken owns that one)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=int(port),
                                           log_level="warning", access_log=False))
    threading.Thread(target=server.run, name="rest-api", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = agent_arguments("ananta-manager", __doc__, argv, once=False)

    def load(path: str) -> tuple[ManagerConfig, str]:  # the config, and the Raft password
        config = load_manager_config(path)
        return config, read_password(config.raft_password_file)

    loaded = load_or_report(load, args)
    if isinstance(loaded, int):
        return loaded
    config, password = loaded

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    from ananta.controller.replication import Cluster, RaftSettings

    hub.patch(thread=True)
    me = config.me
    cluster = Cluster(RaftSettings(
        self_address=me.raft,
        partners=tuple(r.raft for r in config.replicas if r.name != me.name),
        password=password, data_dir=config.data_dir))
    service = ReplicaService(cluster, config.admin_token_sha256,
                             {r.raft: r.api for r in config.replicas})
    serve_api(config, service)
    logging.getLogger("ananta.manager").info(
        "replica %s: raft %s, api %s, openflow %s:%d (password sha256 %s...)", me.name,
        me.raft, me.api, config.openflow.listen_address, config.openflow.port,
        hashlib.sha256(password.encode()).hexdigest()[:8])

    import os_ken.controller.controller  # noqa: F401  (registers ofp_listen_* options)

    conf = cfg.CONF
    conf(args=[], project="os_ken")
    conf.set_override("ofp_listen_host", config.openflow.listen_address)
    conf.set_override("ofp_tcp_listen_port", config.openflow.port)

    from ananta.controller.app import AnantaManagerApp

    AnantaManagerApp.service = service
    AnantaManagerApp.seed_inventory = config.inventory
    AppManager.run_apps(["ananta.controller.app", "os_ken.controller.ofp_handler"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
