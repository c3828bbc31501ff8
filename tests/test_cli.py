import os
import subprocess
import sys

from myopto import set_role_config
from myopto.cli import main


def test_roles_prints_backend_model_their_sources_and_the_chain(capsys):
    set_role_config(
        "optimizer",
        backend="CustomLLM",
        model="opt-model",
        base_url="http://127.0.0.1:9/v1",
        middleware=[lambda r, n: n(r)],
    )
    assert main(["roles", "executor", "optimizer"]) == 0
    out = capsys.readouterr().out
    assert "executor\n  backend: LiteLLM (from default)\n  model:   gpt-4o (from LiteLLM default)" in out
    assert "optimizer\n  backend: CustomLLM (from config)\n  model:   opt-model (from config)" in out
    assert "4. <lambda>" in out and "backend: CustomLLM at http://127.0.0.1:9/v1" in out


def test_roles_reports_a_broken_role_instead_of_crashing(capsys, monkeypatch):
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")  # and no model anywhere
    main(["roles", "executor"])
    assert "error: role 'executor' has no model" in capsys.readouterr().out


def test_console_script_reads_the_environment():
    env = {**os.environ, "TRACE_LLM_MODEL_EXECUTOR": "env-model"}
    out = subprocess.run(
        [sys.executable, "-m", "myopto.cli", "roles"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "model:   env-model (from TRACE_LLM_MODEL_EXECUTOR)" in out
    assert "metaoptimizer" in out


def test_cache_options_work_before_and_after_the_subcommand(tmp_path, capsys):
    import json

    for argv in (["cache", "--dir", str(tmp_path), "stats"], ["cache", "stats", "--dir", str(tmp_path)]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["directory"] == str(tmp_path)


def test_cache_command_with_a_bad_url_says_what_to_fix(capsys):
    assert main(["cache", "stats", "--url", "http://127.0.0.1:6379"]) == 2
    assert "use redis://, rediss:// (TLS), unix:// or redis+cluster://" in capsys.readouterr().err


def test_cache_command_on_a_dir_that_is_a_file_says_what_to_fix(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["cache", "stats", "--dir", str(a_file)]) == 2
    assert f"the cache directory {a_file} is a file, not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_cache_stats_says_whether_the_directory_can_be_written(tmp_path, capsys):
    import json

    assert main(["cache", "stats", "--dir", str(tmp_path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["writable"] is True and stats["memory_bytes"] == 0 and "read_only_reason" not in stats


def test_export_to_a_folder_that_does_not_exist_is_a_clear_error_and_leaves_nothing(tmp_path, capsys):
    target = tmp_path / "missing" / "out.jsonl"
    assert main(["cache", "export", str(target), "--dir", str(tmp_path / "c")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert not target.parent.exists()
