from dataclasses import dataclass, field
from typing import Literal

import pytest

from sonodiff.utils.config import ConfigError, apply_overrides, from_dict, parse_override, to_dict


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class Cfg:
    steps: int = 10
    name: str = "x"
    flag: bool = False
    optim: Optim = field(default_factory=Optim)
    extra: dict = field(default_factory=dict)
    path: str | None = None


def test_roundtrip_and_nested():
    c = from_dict(Cfg, {"steps": 5, "optim": {"lr": 3, "betas": [0.8, 0.9]}})
    assert c.steps == 5 and c.optim.lr == 3.0 and isinstance(c.optim.lr, float) and c.optim.betas == (0.8, 0.9)
    assert from_dict(Cfg, to_dict(c)) == c


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"optim.lrr.*did you mean 'lr'"):
        from_dict(Cfg, {"optim": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"'stepz'.*did you mean 'steps'"):
        from_dict(Cfg, {"stepz": 1})


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"steps": True}, "steps: expected an integer"),
        ({"flag": 1}, "flag: expected true or false"),
        ({"name": 3}, "name: expected a string"),
        ({"optim": {"schedule": "linear"}}, r"optim.schedule: 'linear' is not allowed; choose one of \['cosine', 'constant'\]"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: expected 2 items"),
        ({"optim": 3}, "optim: expected a table"),
    ],
)
def test_wrong_types_are_errors(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Cfg, data)


def test_overrides_parse_toml_values_and_check_keys():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("name=hello world") == (["name"], "hello world")
    assert parse_override('name="q"') == (["name"], "q")
    d = apply_overrides({"steps": 1}, ["optim.lr=0.5", "flag=true", "steps=7"], Cfg)
    c = from_dict(Cfg, d)
    assert c.optim.lr == 0.5 and c.flag is True and c.steps == 7
    with pytest.raises(ConfigError, match=r"optim.rl.*did you mean 'lr'"):
        apply_overrides({}, ["optim.rl=1"], Cfg)
    with pytest.raises(ConfigError, match="must look like"):
        parse_override("novalue")
