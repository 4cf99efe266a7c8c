from pathlib import Path

from gateway.config import Config, load_config


def test_commented_config_file_matches_builtin_defaults() -> None:
    path = Path(__file__).resolve().parents[1] / "config" / "gateway.toml"
    assert load_config(path, environ={}) == Config()
