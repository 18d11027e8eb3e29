"""`ananta-manager --config FILE`: start the os-ken controller with the Ananta app."""

from __future__ import annotations

import argparse
import logging
import sys

from ananta.config import InvalidConfig
from ananta.controller.config import load_manager_config, load_services


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ananta-manager", description=__doc__)
    ap.add_argument("--config", required=True, help="the Manager's YAML config")
    ap.add_argument("--check-config", action="store_true",
                    help="validate the config and the services file, then exit")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_manager_config(args.config)
        load_services(config.services_file, config.inventory) if args.check_config else None
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("config OK")
        return 0

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    hub.patch(thread=True)
    conf = cfg.CONF
    conf.register_cli_opts([], "")
    import os_ken.controller.controller  # noqa: F401  (registers ofp_listen_* options)

    conf(args=[], project="os_ken")
    conf.set_override("ofp_listen_host", config.openflow.listen_address)
    conf.set_override("ofp_tcp_listen_port", config.openflow.port)

    from ananta.controller.app import AnantaManagerApp

    AnantaManagerApp.config = config
    try:
        AppManager.run_apps(["ananta.controller.app", "os_ken.controller.ofp_handler"])
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
