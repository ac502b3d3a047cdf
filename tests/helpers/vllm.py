"""What the vLLM tests share (tests/test_vllm_cpu.py, tests/test_vllm_server_multiprocess.py; the `vllm_server` fixture
is in tests/conftest.py)."""

# Largest |trainer log-prob − engine sampling log-prob| accepted once the engine holds the trainer's weights.
GAP_TOLERANCE = 1e-4
