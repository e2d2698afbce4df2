from pathlib import Path

import pytest

from intentops.config import ConfigError, RunConfig, flat_fields, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), RunConfig)


def test_flat_round_trip_and_overrides():
    cfg = load_config(None, {"sft__epochs": 1, "data__unseen_intents": ["play_music"]})
    assert cfg.sft.epochs == 1
    assert cfg.data.unseen_intents == ["play_music"]
    assert RunConfig.from_flat(cfg.flat()) == cfg


def test_every_knob_is_a_described_flat_field():
    fields = {f.name: f for f in flat_fields()}
    assert set(fields) == set(RunConfig().flat())
    assert all(f.description for f in fields.values())
    assert fields["grpo__num_generations"].type is int
    assert fields["gate__mode"].default == "enabled"


def test_errors_name_the_source_and_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration knob 'sft__nope'"):
        load_config(None, {"sft__nope": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  epochs: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: sft.epochs"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
