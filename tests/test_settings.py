"""settings: variables are read as cheap snapshots, and every change shows on the next read."""

from myopto.settings import log_settings, read_environment


def test_the_same_environment_object_comes_back_until_a_variable_changes(monkeypatch):
    first = read_environment("critic")
    assert read_environment("critic") is first
    monkeypatch.setenv("TRACE_LLM_MODEL_CRITIC", "critic-model")
    changed = read_environment("critic")
    assert changed is not first and changed.role_model == "critic-model"
    monkeypatch.setenv("MYOPTO_CACHE_URL", "redis://localhost:6379/0")
    assert read_environment("critic").cache_url == "redis://localhost:6379/0"
    monkeypatch.delenv("TRACE_LLM_MODEL_CRITIC")
    assert read_environment("critic").role_model is None
    assert read_environment("other-role").role_model is None  # one snapshot per role


def test_log_settings_follow_the_variables(monkeypatch):
    monkeypatch.delenv("MYOPTO_LOG_FILE", raising=False)
    assert log_settings() == (None, False)
    monkeypatch.setenv("MYOPTO_LOG_FILE", "/tmp/calls.jsonl")
    monkeypatch.setenv("MYOPTO_LOG_MESSAGES", "yes")
    assert log_settings() == ("/tmp/calls.jsonl", True)
    monkeypatch.setenv("MYOPTO_LOG_MESSAGES", "0")
    assert log_settings() == ("/tmp/calls.jsonl", False)
