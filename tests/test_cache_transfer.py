"""`myopto cache export` / `import` between real cache directories, with files edited as someone
handing over a bad or hostile export would: every line is checked, nothing cached is replaced."""

from __future__ import annotations

import json
import sqlite3

import pytest
from testkit import use_cache

from myopto import CacheMiss, get_llm
from myopto.cache_transfer import import_records
from myopto.cli import main
from myopto.stores.disk import DiskStore, disk_store
from myopto.testing.mounts import mounts_unavailable, run_mounted


def exported(server, tmp_path, prompts, name="theirs") -> list[dict]:
    """Lines of an export of a cache that answered `prompts` (each answer tagged with `name`)."""
    directory = tmp_path / name
    use_cache(server, directory)
    for prompt in prompts:
        server.reply(f"{name} says {prompt}")
        get_llm()(prompt)
    out = tmp_path / f"{name}.jsonl"
    assert main(["cache", "export", str(out), "--dir", str(directory)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def by_prompt(lines: list[dict]) -> dict[str, dict]:
    return {line["request"]["messages"][0]["content"]: line for line in lines}


def write_lines(path, lines) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_each_line_is_checked_the_good_ones_imported_and_the_bad_ones_reported_by_number(server, tmp_path, capsys):
    lines = by_prompt(exported(server, tmp_path, ["one", "two", "three", "four", "five"]))
    swapped_key = {**lines["three"], "key": lines["four"]["key"]}  # an answer planted under another request's key
    edited_request = {**lines["four"], "request": {**lines["four"]["request"], "model": "other"}}
    crashes_later = json.loads(json.dumps(lines["five"]))
    crashes_later["response"]["usage"] = {"prompt_tokens": "12"}
    no_version = {k: v for k, v in lines["two"].items() if k != "version"}
    surrogate = json.loads(json.dumps(lines["two"]))
    surrogate["request"]["model"] = "\ud800"
    handed = tmp_path / "handed.jsonl"
    write_lines(
        handed,
        [
            lines["one"],
            "{not json",
            swapped_key,
            "",
            edited_request,
            crashes_later,
            "[1, 2]",
            no_version,
            surrogate,
            lines["two"],
        ],
    )
    ours = tmp_path / "ours"

    assert main(["cache", "import", str(handed), "--dir", str(ours)]) == 2
    err = capsys.readouterr().err
    assert f"{handed}:2: not a JSON line" in err
    assert f"{handed}:3: its key {lines['four']['key'][:16]}... is not the key of the request it records" in err
    assert f"{handed}:5: its key" in err
    assert f"{handed}:6: 'response.usage.prompt_tokens' is '12', not a whole number" in err
    assert f"{handed}:7: not a myopto cache record" in err
    assert f"{handed}:8: no record 'version'" in err
    assert f"{handed}:9: its 'request' has no key" in err
    assert (
        f"imported 2 entries into {ours} (0 already there, 0 conflicts kept the cached answer, 7 lines refused)" in err
    )

    assert sorted(key for key, _ in DiskStore(ours).items()) == sorted([lines["one"]["key"], lines["two"]["key"]])
    use_cache(server, ours, mode="replay")
    assert get_llm()("one").text == "theirs says one" and get_llm()("two").text == "theirs says two"
    for prompt in ("three", "four", "five"):
        with pytest.raises(CacheMiss):
            get_llm()(prompt)


def test_an_import_never_replaces_a_different_cached_answer_and_an_identical_one_is_a_no_op(server, tmp_path, capsys):
    theirs = exported(server, tmp_path, ["shared", "only theirs"], name="theirs")
    server.reset()
    mine = exported(server, tmp_path, ["shared"], name="mine")
    assert by_prompt(mine)["shared"]["key"] == by_prompt(theirs)["shared"]["key"]
    ours = tmp_path / "mine"
    capsys.readouterr()

    assert main(["cache", "import", str(tmp_path / "theirs.jsonl"), "--dir", str(ours)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'theirs.jsonl'}:" in err
        and "a different answer to this request is already cached; kept it" in err
    )
    assert "imported 1 entries" in err and "1 conflicts kept the cached answer" in err
    use_cache(server, ours, mode="replay")
    assert get_llm()("shared").text == "mine says shared"  # ours stayed
    assert get_llm()("only theirs").text == "theirs says only theirs"

    assert main(["cache", "import", str(tmp_path / "mine.jsonl"), "--dir", str(ours)]) == 0
    assert "imported 0 entries" in capsys.readouterr().err and len(DiskStore(ours)) == 2


def test_an_import_replaces_an_entry_that_cannot_be_read(server, tmp_path, capsys):
    lines = exported(server, tmp_path, ["q"])
    ours = tmp_path / "ours"
    assert main(["cache", "import", str(tmp_path / "theirs.jsonl"), "--dir", str(ours)]) == 0
    disk_store(ours).close()
    with sqlite3.connect(ours / "cache.db") as db:
        db.execute("UPDATE Cache SET value = '{broken'")
    fresh = DiskStore(ours)
    report = import_records(fresh, tmp_path / "theirs.jsonl")
    assert (report.imported, report.replaced_damaged, report.refused) == (1, 1, 0)
    assert DiskStore(ours).get(lines[0]["key"])["response"]["text"] == "theirs says q"


def test_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["cache", "import", str(tmp_path / "nope.jsonl"), "--dir", str(tmp_path / "c")]) == 2
    assert "No such file or directory" in capsys.readouterr().err


@pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))
def test_an_import_into_a_read_only_cache_is_refused_before_reading(server, tmp_path):
    exported(server, tmp_path, ["q"])
    ours = tmp_path / "ours"
    use_cache(server, ours)
    get_llm()("something else")
    disk_store(ours).close()
    done = run_mounted(
        "import sys\nfrom myopto.cli import main\n"
        f"sys.exit(main(['cache', 'import', {str(tmp_path / 'theirs.jsonl')!r}, '--dir', {str(ours)!r}]))",
        read_only=[ours],
    )
    assert done.returncode == 2 and "is read-only here; nothing was imported" in done.stderr
