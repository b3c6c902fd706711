"""The bounded readers every file vqclip reads goes through: crafted files cannot block,
recurse past the stack, or expand in memory."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

import pytest

from vqclip.limits import MAX_NODES, parse_json, parse_yaml, read_text

# A "billion laughs" YAML: 9 levels of 9 aliases, 623 bytes that expand to 9**9 strings.
LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{','.join(['*' + chr(97 + n)] * 9)}]\n" for n in range(8)
)


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(_error(read_text, fifo, "sweep")))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "read_text blocked on a FIFO"
    assert outcome == [f"sweep: {fifo} is not a regular file; expected a text file"]
    assert "is not a regular file" in _error(read_text, tmp_path, "sweep")


def test_a_file_over_the_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "config.json"
    big.write_bytes(b" " * (2 << 20))
    assert _error(read_text, big, "resume") == f"resume: {big} holds {2 << 20} bytes; expected at most {1 << 20}"  # fmt: skip


def test_yaml_aliases_count_as_what_they_expand_to() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert f"over {MAX_NODES} values" in _error(parse_yaml, LAUGHS, "sweep")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert grown < 50_000, f"peak RSS grew {grown} KiB"
    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "sweep") == {"a": [1, 2], "b": [1, 2]}


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    for depth, ok in ((32, True), (33, False), (200_000, False)):
        text = "[" * depth + "]" * depth
        if ok:
            parse_json(text, "config")
        else:
            assert "nested over 32 levels" in _error(parse_json, text, "config")
    assert "nested" in _error(parse_yaml, "[" * 100_000 + "]" * 100_000, "sweep")
    assert parse_json('{"a": "\\"' + "[" * 40 + '"}', "config") == {"a": '"' + "[" * 40}


def _error(function, *args) -> str:  # noqa: ANN001
    with pytest.raises(ValueError) as error:
        function(*args)
    return str(error.value)
