"""`myopto logs`: golden output on a fixed log file, and on a log written by real calls."""

import json
from pathlib import Path

from myopto import configure_logging, get_llm, run, set_role_config
from myopto.cli import main

LOG = Path(__file__).parent / "data" / "calls.jsonl"

SUMMARY = """\
run     role       model     calls  cache  tokens  cache-read  cost USD  p50 s  p95 s  errors
------  ---------  --------  -----  -----  ------  ----------  --------  -----  -----  ------
exp-42  optimizer  gpt-4o        2    50%     240           0  0.000450  0.001  1.200       0
exp-42  executor   local-7b      2     0%      15           0   unknown  0.400  2.500       1
-       executor   smollm2       1     0%      42           0  0.000000  0.800  0.800       0"""

SHOW_ERRORS = """\
2026-11-25T10:00:04Z  run=exp-42  role=executor  model=local-7b  ERROR
  tokens 0+0  cost unknown  latency 2.500 s  attempts 5
  error: ServerError: CustomLLM call failed (HTTP 503): overloaded"""

SHOW_FIRST = """\
2026-11-25T10:00:00Z  run=exp-42  role=optimizer  model=gpt-4o  OK
  tokens 100+20  cost 0.00045  latency 1.200 s  attempts 1
  [system] You optimise.
  [user] Improve x.
  [answer] {"suggestion": {"x": 5}}"""


def test_summary_golden(capsys):
    assert main(["logs", "summary", str(LOG)]) == 0
    assert capsys.readouterr().out.rstrip("\n") == SUMMARY


def test_summary_json(capsys):
    main(["logs", "summary", str(LOG), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["cache_hit_rate"] == 0.5 and rows[1]["errors"] == 1 and rows[1]["cost_unknown_calls"] == 1


def test_show_filters_golden(capsys):
    main(["logs", "show", str(LOG), "--errors"])
    assert capsys.readouterr().out.rstrip("\n") == SHOW_ERRORS
    main(["logs", "show", str(LOG), "--run", "exp-42", "--role", "optimizer", "--grep", "improve"])
    assert capsys.readouterr().out.rstrip("\n") == SHOW_FIRST
    main(["logs", "show", str(LOG), "--last", "1", "--json"])
    assert json.loads(capsys.readouterr().out)["model"] == "smollm2"


def test_tail_prints_the_last_lines_and_follows(tmp_path, capsys):
    path = tmp_path / "live.jsonl"
    path.write_text(LOG.read_text())
    main(["logs", "tail", str(path), "--lines", "2", "--seconds", "0.3", "--json"])
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["request_key"] for line in lines] == ["cccc", "dddd"]


def test_summary_of_a_log_written_by_real_calls(server, tmp_path, capsys):
    path = tmp_path / "real.jsonl"
    configure_logging(path, messages=True)
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url)
    with run("real-run"):
        for i in range(3):
            get_llm()(f"q{i}")
    configure_logging()
    main(["logs", "summary", str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:5] == ["real-run", "executor", "gpt-4o-mini", "3", "0%"]
    main(["logs", "show", str(path), "--last", "1"])
    assert "[answer] echo: q2" in capsys.readouterr().out
