"""Load a YAML config file into ``from_dict`` with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import yaml

T = TypeVar("T")


def load_yaml_file(path: str | Path, from_dict: Callable[[object], T], error: type[Exception], what: str) -> T:
    """``from_dict(yaml.safe_load(path))``. A missing file, invalid YAML or an ``error`` raised by
    ``from_dict`` all become ``error`` with ``what`` (e.g. "rig file") and the path in the message."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from None
    try:
        return from_dict(data)
    except error as e:
        raise error(f"{path}: {e}") from None
