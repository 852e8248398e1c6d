"""The one-line cause a failed server start reports, read from real vLLM logs of the H100 sitting (2026-12-07)."""

from pathlib import Path

from deploybench.engines.serving.process_tools import last_error

LOGS = Path(__file__).parent.parent / "fixtures" / "server_logs"


def test_the_engine_cores_root_cause_is_named_not_the_api_servers_pointer():
    # vLLM prefixes each process's lines "(EngineCore pid=…)"; the API server's last exception only says
    # "See root cause above": the cause is the engine core's ModuleNotFoundError, 60 lines earlier.
    cause = last_error((LOGS / "vllm-0.26.0-h100-no-flashinfer.log").read_text())
    assert cause.startswith("ModuleNotFoundError: No module named 'flashinfer'")
    assert "then: RuntimeError: Engine core initialization failed" in cause


def test_a_plain_traceback_gives_its_final_exception():
    assert last_error((LOGS / "vllm-0.26.0-h100-no-torch.log").read_text()) == (
        "ModuleNotFoundError: No module named 'torch'"
    )


def test_pydantic_reasons_and_error_lines():
    tail = "Traceback (most recent call last):\nValidationError: 1 validation error\n  max_model_len\n    too big\n"
    assert last_error(tail) == "ValidationError: 1 validation error max_model_len too big"
    assert last_error("INFO starting\nERROR 12-07 [core.py] boom\nINFO bye\n") == "ERROR 12-07 [core.py] boom"
    assert last_error("INFO all well\n") == ""
