"""The default config file and the config classes' defaults describe the same recipe."""

from __future__ import annotations

import tomllib

import pytest

from export.config import DEFAULT_CONFIG, DataConfig, ExportConfig, MemoryConfig, TrainConfig


@pytest.mark.parametrize(("section", "model"), [("train", TrainConfig), ("data", DataConfig), ("memory", MemoryConfig)])
def test_default_config_file_states_the_class_defaults(
    section: str, model: type[TrainConfig | DataConfig | MemoryConfig]
) -> None:
    # `vitrine export train` without --config and a config file that leaves a value out must train the recipe
    # the default file documents, so every value the file states is also the class's default.
    with DEFAULT_CONFIG.open("rb") as handle:
        stated = tomllib.load(handle)[section]
    defaults = model.model_fields
    differing = {key: (value, defaults[key].default) for key, value in stated.items() if defaults[key].default != value}
    assert not differing, f"[{section}] in {DEFAULT_CONFIG.name} differs from {model.__name__}: {differing}"


def test_default_config_file_loads() -> None:
    config = ExportConfig.load()
    assert config.train == TrainConfig()
    assert config.data == DataConfig()
    assert config.memory == MemoryConfig()
