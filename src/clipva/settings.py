"""Checks of a configuration that its JSON schema cannot express.

JSON Schema's ``minimum``/``maximum`` let NaN through (every comparison with NaN is false), and YAML reads
``.nan`` and ``.inf`` as numbers, so a schema-valid config can still hold a number no setting can use. Nor
can the schema compare two settings, such as the head's stride with its window.
"""

from __future__ import annotations

import math

from clipva.errors import ConfigError
from clipva.windows import Window


def non_finite_keys(config: object, prefix: str = "") -> list[str]:
    """The dotted keys (list items as ``key[i]``) of every NaN or infinite number in a nested config."""
    if isinstance(config, float):
        return [] if math.isfinite(config) else [prefix or "(top level)"]
    if isinstance(config, dict):
        return [k for key, value in config.items() for k in non_finite_keys(value, f"{prefix}.{key}".lstrip("."))]
    if isinstance(config, list | tuple):
        return [k for i, value in enumerate(config) for k in non_finite_keys(value, f"{prefix}[{i}]")]
    return []


def check_finite(config: dict, where: str = "config") -> None:
    """ConfigError naming each key whose value is NaN or infinite."""
    bad = non_finite_keys(config)
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)}: not a finite number (NaN and infinity are not settings)")


def check_config(config: dict, where: str = "config") -> None:
    """ConfigError for what a schema-valid config can still get wrong: non-finite numbers, a head whose
    stride is larger than its window (the frames between windows would get no prediction), and split
    settings that the data set's format cannot have."""
    check_finite(config, where)
    head = config.get("head", {})
    if "window" in head and "stride" in head:
        try:
            Window.from_dict(head)
        except ValueError:
            raise ConfigError(
                f"{where}: head.stride ({head['stride']}) is larger than head.window ({head['window']}); "
                "windows must overlap or touch, so set head.stride to at most head.window"
            ) from None
    data, split = config.get("dataset", {}), config.get("split", {})
    aff = data.get("format") == "affwild2"
    if split.get("method") == "official" and not aff:
        raise ConfigError(
            f"{where}: split.method official is Aff-Wild2's split (Train_Set, Validation_Set, test list); "
            "it needs dataset.format: affwild2"
        )
    if split.get("test_list") is not None and not aff:
        raise ConfigError(f"{where}: split.test_list names Aff-Wild2 test videos; it needs dataset.format: affwild2")
    if split.get("method") == "ids" and aff:
        raise ConfigError(f"{where}: split.method ids needs numbered clips (AFEW-VA); Aff-Wild2's videos have names")
