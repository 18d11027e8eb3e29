"""Every daemon's `--check-config` accepts the lab's generated configs and names bad keys."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ananta.controller.main import main as manager_main
from ananta.hostagent.main import main as hostagent_main
from ananta.mux.main import main as mux_main
from ananta.topologies import configs
from ananta.topologies.spec import LabSpec, build_plan


def write(path: pathlib.Path, data: object) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_generated_configs_pass_check_config(tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    plan = build_plan(LabSpec())
    run = str(tmp_path)
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets" / "raft.password", "a-long-enough-raft-password\n")
    manager = write(tmp_path / "manager.yaml", configs.manager_config(
        plan, plan.nodes["manager2"], run, "a" * 64))
    mux = write(tmp_path / "mux.yaml", configs.mux_config(plan, plan.nodes["mux1"], run))
    hv = write(tmp_path / "hv.yaml", configs.hostagent_config(plan, plan.nodes["hv2"], run))
    assert manager_main(["--config", manager, "--check-config"]) == 0
    assert mux_main(["--config", mux, "--check-config"]) == 0
    assert hostagent_main(["--config", hv, "--check-config"]) == 0
    assert capsys.readouterr().out.count("config OK") == 3


def test_bad_configs_are_refused_with_the_key_path(tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plan = build_plan(LabSpec())
    mux = configs.mux_config(plan, plan.nodes["mux1"], str(tmp_path))
    mux["bgp"]["hold_time"] = 1
    mux["uplink"]["address"] = "198.18.7.2"
    assert mux_main(["--config", write(tmp_path / "mux.yaml", mux), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "bgp.hold_time: Input should be greater than or equal to 3" in err
    assert "uplink.address: Value error, needs a prefix length shorter than /32" in err

    hv = configs.hostagent_config(plan, plan.nodes["hv1"], str(tmp_path))
    hv["vms"][1]["ofport"] = hv["vms"][0]["ofport"]
    hv["managers"] = ["not-an-address"]
    assert hostagent_main(["--config", write(tmp_path / "hv.yaml", hv), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "managers[0]: Value error, not ADDRESS:PORT" in err

    hv["managers"] = ["198.19.0.10:6653"]
    assert hostagent_main(["--config", write(tmp_path / "hv.yaml", hv), "--check-config"]) == 2
    assert "vms[1].ofport: duplicates vms[0]" in capsys.readouterr().err

    manager = configs.manager_config(plan, plan.nodes["manager1"], str(tmp_path), "a" * 64)
    manager["inventory"]["hosts"][1]["name"] = "hv1"
    manager["self"] = "manager9"
    assert manager_main(["--config", write(tmp_path / "m.yaml", manager), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "inventory.hosts[1].name: duplicates inventory.hosts[0].name" in err
    assert "self: 'manager9' is not one of the replicas" in err

    manager = configs.manager_config(plan, plan.nodes["manager1"], str(tmp_path), "a" * 64)
    write(tmp_path / "short.password", "short\n")
    manager["raft_password_file"] = str(tmp_path / "short.password")
    assert manager_main(["--config", write(tmp_path / "m.yaml", manager), "--check-config"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
