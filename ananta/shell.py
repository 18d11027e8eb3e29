"""Running commands for the agents and the lab (imperative shell): one place, clear errors."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence

LOG = logging.getLogger("ananta.shell")


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], code: int, output: str):
        self.argv, self.code, self.output = list(argv), code, output
        super().__init__(f"{' '.join(argv)} exited {code}: {output.strip()[-2000:]}")


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 30, input: str | None = None) -> str:
    LOG.debug("run: %s", " ".join(argv))
    proc = subprocess.run(list(argv), env=dict(env) if env is not None else None, input=input,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr + proc.stdout)
    return proc.stdout


def run_all(commands: Sequence[Sequence[str]], env: Mapping[str, str] | None = None) -> None:
    for argv in commands:
        run(argv, env=env)
