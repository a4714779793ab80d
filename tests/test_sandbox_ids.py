"""Sandbox ids: uniform characters read in batches, never shared with a forked child."""

from __future__ import annotations

import os
import string

from flask_finconn.sandbox._data import new_id


def test_ids_are_24_characters_of_the_alphabet_and_distinct() -> None:
    ids = [new_id("py_") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    allowed = set(string.digits + string.ascii_letters)
    for value in ids:
        assert value.startswith("py_") and len(value) == 27
        assert set(value[3:]) <= allowed


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_id("evt_")  # the batch now holds characters the parent has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        try:
            os.write(write, " ".join(new_id("") for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert child.isdisjoint(new_id("") for _ in range(5))
