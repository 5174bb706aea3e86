"""Table specs from TOML: unknown keys, wrong types, unknown strategies and broken files are named."""

from __future__ import annotations

import pytest

from recsys.config import ConfigError
from recsys.tables import load_spec


def write(tmp_path, text: str):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('strategy = "hashing"\ncompresion = 10\n', r"unknown key 'compresion'; known keys: strategy, embedding_dim"),
        ('strategy = "hashing"\ncompression = "ten"\n', "'compression' must be a number, got 'ten'"),
        ('strategy = "full"\nembedding_dim = 16.5\n', "'embedding_dim' must be an integer"),
        ('strategy = "full"\nmin_count = true\n', "'min_count' must be an integer, got True"),
        ('strategy = "bloom"\n', "unknown strategy 'bloom'; known strategies: full, hashing"),
        ("embedding_dim = 16\n", "missing key 'strategy'"),
        ('strategy = "full"\nembedding_dim = 0\n', "embedding_dim must be a positive multiple of 4"),
        ('strategy = "full"\nembedding_dim = 10\n', "embedding_dim must be a positive multiple of 4"),
        ('strategy = "full\n', "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_spec(tmp_path / "nope.toml")
