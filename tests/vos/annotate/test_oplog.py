"""The session log and its book: clicks adding up, every undo, torn lines after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from vos.annotate.oplog import Book, Effect, OpLog


def _book(*ops: dict) -> tuple[Book, list[list[Effect]]]:
    book = Book()
    effects = []
    for n, op in enumerate(ops):
        effects.append(book.apply({**op, "n": n}))
    return book, effects


def test_clicks_add_up_and_a_box_replaces_them() -> None:
    book, effects = _book(
        {"op": "object", "obj": 1, "name": "cat"},
        {"op": "add", "frame": 3, "obj": 1, "points": [[1, 2]], "labels": [1], "box": None,
         "clear_old": False},
        {"op": "add", "frame": 3, "obj": 1, "points": [[5, 6]], "labels": [0], "box": None,
         "clear_old": False},
    )
    assert book.current == {(3, 1): "2"}
    assert book.prompts["2"].points == ((1.0, 2.0, 1), (5.0, 6.0, 0))
    assert effects[2] == [Effect("entry", 1, 3, "2")]
    book.apply({"op": "add", "n": 3, "frame": 3, "obj": 1, "points": [], "labels": [],
                "box": [0, 0, 9, 9], "clear_old": True})
    assert book.prompts["3"].points == () and book.prompts["3"].box == (0.0, 0.0, 9.0, 9.0)
    assert [obj for obj, _ in book.prompts_on(3)] == [1] and book.prompts_on(4) == []


def test_each_undo_puts_back_what_held_before() -> None:
    book, _ = _book(
        {"op": "object", "obj": 1, "name": "cat"},
        {"op": "add", "frame": 0, "obj": 1, "points": [[1, 2]], "labels": [1], "box": None,
         "clear_old": False, "valid": [0, 0]},
        {"op": "track", "start": 0, "reverse": False},
        {"op": "frame", "t": 0}, {"op": "end", "state": "done"},
        {"op": "add", "frame": 4, "obj": 1, "points": [[3, 3]], "labels": [0], "box": None,
         "clear_old": False, "valid": [10, 0]},
        {"op": "clear", "frame": 0, "obj": 1, "valid": [4, 0]},
        {"op": "rename", "obj": 1, "name": "dog"},
        {"op": "remove", "obj": 1, "tid": 1, "pos": 0, "valid": [4, 0]},
    )
    assert book.objects == {} and book.current == {}
    assert book.next_undo() == "removing dog"

    def undo() -> list[Effect]:
        return book.apply({"op": "undo", "n": book.count, "target": book.next_undo_n()})

    # The removal: the object, its prompts, its tracker id, and the kept states' validity
    # (no pass ran since).
    effects = undo()
    assert book.objects == {1: "dog"} and book.current == {(4, 1): "5"}
    assert Effect("unremove", 1, tid=1, pos=0) in effects
    assert Effect("entry", 1, 4, "5") in effects and Effect("valid", valid_end=(4, 0)) in effects
    assert undo() == [] and book.objects == {1: "cat"}  # the rename
    assert undo() == [Effect("entry", 1, 0, "1"), Effect("valid", valid_end=(4, 0))]
    # The click on frame 4 came after a pass; the one on frame 0 before it: validity comes
    # back only where no pass ran in between.
    assert undo() == [Effect("entry", 1, 4, None), Effect("valid", valid_end=(10, 0))]
    assert undo() == [Effect("entry", 1, 0, None)]
    assert book.current == {} and book.objects == {1: "cat"}
    assert undo() == [] and book.objects == {}
    assert book.next_undo() is None
    with pytest.raises(ValueError, match="not the latest action"):
        book.apply({"op": "undo", "n": book.count, "target": 1})


def test_undo_depth_bounds_what_is_kept() -> None:
    book = Book(undo_depth=2)
    book.apply({"op": "object", "n": 0, "obj": 1, "name": "a"})
    for n in range(1, 5):
        book.apply({"op": "add", "n": n, "frame": 0, "obj": 1, "points": [[n, n]],
                    "labels": [1], "box": None, "clear_old": True})
    # In force: version 4; undoable: the last two clicks (their "before" versions 2 and 3).
    assert book.kept_versions() == {"2", "3", "4"}


def test_an_import_is_one_action() -> None:
    book, effects = _book(
        {"op": "import", "objects": [[1, "a"], [2, "b"]], "entries": [[0, 1], [0, 2], [5, 1]]},
    )
    assert book.objects == {1: "a", 2: "b"} and book.next_obj_id == 3
    assert book.current == {(0, 1): "0.0", (0, 2): "0.1", (5, 1): "0.2"}
    assert len(effects[0]) == 3
    book.apply({"op": "undo", "n": 1, "target": 0})
    assert book.objects == {} and book.current == {}


def test_unknown_lines_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log line"):
        Book().apply({"op": "explode"})


def test_a_torn_last_line_is_skipped_then_cut_off(tmp_path: Path) -> None:
    log = OpLog(tmp_path / "ops.jsonl")
    log.append({"op": "object", "obj": 1, "name": "a"})
    with log.path.open("ab") as handle:
        handle.write(b'{"op":"add","fra')  # a kill in the middle of a write
    assert OpLog(log.path).read() == [{"op": "object", "obj": 1, "name": "a"}]
    again = OpLog(log.path)
    again.append({"op": "rename", "obj": 1, "name": "b"})
    assert [op["op"] for op in again.read()] == ["object", "rename"]
    assert again.damaged == 0
    # A damaged line in the middle (a disk fault) is counted, not silently taken.
    text = log.path.read_bytes()
    log.path.write_bytes(text.replace(b'"rename"', b'"ren\xffame'))
    assert [op["op"] for op in again.read()] == ["object"] and again.damaged == 1
