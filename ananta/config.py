"""Typed, strict configuration parsing with errors that name the key path (pure).

Every config file of the project (the VIP services file, the Manager, Mux and Host Agent node
files, the lab spec) is a pydantic model derived from `StrictModel`: unknown keys are errors,
values are validated, and a failure becomes `InvalidConfig` whose lines read
`vips[0].endpoints[1].port: Input should be less than or equal to 65535`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


def _a_number(value: Any) -> Any:
    if isinstance(value, (bool, str)):  # pydantic would take true as 1 and "80" as 80
        raise ValueError("must be a number")
    return value


# Put in an int field's Annotated[...]: JSON true/false and strings are refused, not coerced
# (a float with no fraction, which JSON Schema's "integer" allows, is still taken).
JsonInteger = BeforeValidator(_a_number)
JsonNumber = JsonInteger  # the same, in a float field's Annotated[...]


class StrictModel(BaseModel):
    """Base of every config schema: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


@dataclass(frozen=True)
class ConfigError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidConfig(ValueError):
    """A config was refused; `errors` lists every problem found, each with its key path."""

    def __init__(self, source: str, errors: Sequence[ConfigError]):
        self.source = source
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"invalid {source}:\n{lines}")


def key_path(loc: Iterable[int | str]) -> str:
    """('vips', 0, 'address') -> 'vips[0].address'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def join_path(prefix: str, *parts: int | str) -> str:
    return key_path([prefix, *parts]) if prefix else key_path(parts)


def parse(model: type[M], data: Any, source: str) -> M:
    """Validate plain data (as loaded from YAML) into `model` or raise InvalidConfig."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidConfig(source, [ConfigError("", "expected a mapping at the top level")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            errors.append(ConfigError(key_path(loc), msg))
        raise InvalidConfig(source, errors) from None


def parse_yaml_text(model: type[M], text: str, source: str) -> M:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidConfig(source, [ConfigError("", f"not valid YAML: {exc}")]) from None
    return parse(model, data, source)


def load_yaml_file(model: type[M], path: str) -> M:
    """The one impure helper here: read a file, then parse it."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InvalidConfig(path, [ConfigError("", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml_text(model, text, path)


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json", exclude_defaults=False), sort_keys=False)
