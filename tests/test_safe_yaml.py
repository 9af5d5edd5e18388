"""The package's YAML reader: YAML 1.2 scalars, no anchors or aliases, no duplicate keys, bounded input."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from knapsack_rl.safe_yaml import MAX_YAML_BYTES, load_yaml_file, parse_yaml_text

# Ten levels of nine aliases each: about 10**9 strings once expanded (over 4 GB and minutes with yaml.safe_load).
BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-4", 1e-4),
        ("5E3", 5000.0),
        ("-2.5e+2", -250.0),
        (".5", 0.5),
        ("1.", 1.0),
        ("2.0e-4", 2e-4),
        ("010", 10),
        ("0o17", 15),
        ("0x1f", 31),
        ("-7", -7),
        ("true", True),
        ("False", False),
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        ("2024-01-01", "2024-01-01"),
        ("~", None),
        ("null", None),
        ("", None),
        ("[1e-3, 1]", [1e-3, 1]),
        ("{a: 1e-4, b: [x, y]}", {"a": 1e-4, "b": ["x", "y"]}),
        ("'1e-4'", "1e-4"),
    ],
)
def test_scalars_follow_the_yaml_1_2_core_schema(text: str, value: object) -> None:
    got = parse_yaml_text(text, source="--set x")
    assert got == value and type(got) is type(value)


def test_infinities_and_nan_are_floats() -> None:
    assert parse_yaml_text("-.inf", source="s") == -math.inf and math.isnan(parse_yaml_text(".NaN", source="s"))


def test_billion_laughs_is_refused_at_its_first_anchor_in_bounded_time(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^.*laughs.yaml:1: anchors and aliases \(&name, \*name\) are not allowed$"):
        load_yaml_file(path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: &b {lr: 1}\nrun: *b\n", r"c.yaml:1: anchors and aliases"),
        ("run:\n  <<: *b\n", r"c.yaml:2: anchors and aliases"),
        ("lr: 1\nseed: 2\nlr: 3\n", r"c.yaml:3: duplicate key 'lr' \(first on line 1\)"),
        ("knapsack:\n  max_n: 3\n  alpha: 0.5\n  max_n: 4\n", r"c.yaml:4: duplicate key 'max_n' \(first on line 2\)"),
        ("a: {b: 1, b: 2}\n", r"c.yaml:1: duplicate key 'b' \(first on line 1\)"),
        ("x: !!python/object/apply:os.system ['true']\n", r"c.yaml:1: tag .*python/object/apply:os.system.*"),
        ("x: !!binary aGk=\n", r"c.yaml:1: tag 'tag:yaml.org,2002:binary' is not allowed"),
        ("x: !!set {a}\n", r"c.yaml:1: tag 'tag:yaml.org,2002:set' is not allowed"),
        ("? [a, b]\n: 1\n", r"c.yaml:1: a mapping key must be a scalar"),
        ("a: 1\nlr: [1, 2\n", r"c.yaml:3: while parsing a flow sequence: expected ',' or '\]'"),
        ("a: 1\n--- \nb: 2\n", r"c.yaml:2: expected a single document"),
        ("a: 1\nb: \x07\n", r"c.yaml:2: character #x0007 is not allowed in YAML"),
        ("[" * 5000 + "]" * 5000, r"c.yaml: YAML nested too deeply"),
    ],
)
def test_bad_documents_are_one_line_errors_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_yaml_file(path)
    assert "\n" not in str(info.value)


def test_files_are_read_as_regular_files_of_bounded_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^config file .*missing.yaml does not exist$"):
        load_yaml_file(tmp_path / "missing.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ValueError, match=r"^config file .*dir.yaml is a folder$"):
        load_yaml_file(tmp_path / "dir.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")  # nobody writes it: reading it would block forever
    with pytest.raises(ValueError, match=r"^config file .*fifo.yaml is not a regular file"):
        load_yaml_file(tmp_path / "fifo.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ValueError, match=rf"big.yaml is {MAX_YAML_BYTES + 4} bytes, over the limit of"):
        load_yaml_file(big)
    (tmp_path / "latin1.yaml").write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1.yaml:2: not valid UTF-8"):
        load_yaml_file(tmp_path / "latin1.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_yaml_file(tmp_path / "empty.yaml") is None


def test_inline_errors_name_the_source_and_column() -> None:
    with pytest.raises(ValueError, match=r"^--set 'lr=\[1': at column 3: while parsing a flow sequence"):
        parse_yaml_text("[1", source="--set 'lr=[1'")
    with pytest.raises(ValueError, match=r"^arm 'x': at line 2, column 1: duplicate key 'a' \(first on line 1\)$"):
        parse_yaml_text("a: 1\na: 2", source="arm 'x'")
