"""The benchmark's model: the tiny demo model, a randomly initialised Qwen2.5-0.5B-shaped stand-in, or a pretrained
path; built once on disk and shared by every run."""

from __future__ import annotations

import json
from pathlib import Path

RANDOM_WEIGHTS_NOTE = "random weights, timing only"

# Qwen2.5-0.5B's architecture (config.json of Qwen/Qwen2.5-0.5B), for a randomly initialised stand-in.
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
    use_sliding_window=False,
)


def prepare_model(cfg: dict, root: Path) -> dict:
    """Build (once) the benchmark's model on disk; return {path, kind, weights, note, tokenizer}."""
    model_cfg = cfg["model"]
    kind = model_cfg["kind"]
    path = Path(model_cfg.get("path") or root / "outputs" / "bench" / "models" / f"{cfg['name']}-{kind}")
    if kind == "tiny":
        from ..tiny import build_tiny_model

        if not (path / "config.json").exists():
            build_tiny_model(path, seed=model_cfg.get("seed", 0), **model_cfg.get("dimensions", {}))
        return {"path": str(path), "kind": kind, "weights": "random (tiny demo model, trained by the benchmark)",
                "tokenizer": "auto", "note": None}
    if kind == "qwen2.5-0.5b-shaped":
        if not (path / "config.json").exists():
            build_qwen_shaped_model(path, seed=model_cfg.get("seed", 0), dtype=model_cfg.get("dtype", "bfloat16"),
                                    tokenizer_from=model_cfg.get("tokenizer_from"),
                                    **model_cfg.get("dimensions", {}))
        meta = json.loads((path / "bench_model.json").read_text())
        return {"path": str(path), "kind": kind, "weights": "random", "tokenizer": meta["tokenizer_loader"],
                "tokenizer_source": meta["tokenizer_source"], "note": RANDOM_WEIGHTS_NOTE}
    if kind == "pretrained":
        return {"path": str(model_cfg["path"]), "kind": kind, "weights": "pretrained", "tokenizer": "auto",
                "note": None}
    if kind == "warm_start":
        # A headroom task's SFT warm start (trl_rapid/headroom.py), cached by the hash of its recipe.
        from ..headroom import build_warm_start

        recipe = warm_start_recipe(model_cfg)
        cache = model_cfg.get("cache_dir") or root / "outputs" / "warm_start"
        path = build_warm_start(recipe, cache_dir=cache)
        return {"path": str(path), "kind": kind, "weights": f"SFT warm start ({recipe.sft_steps} steps, "
                f"key {recipe.key()})", "tokenizer": "auto", "note": None, "recipe": dict(model_cfg.get("recipe", {}))}
    raise ValueError(f"model.kind must be tiny, qwen2.5-0.5b-shaped, pretrained or warm_start, got {kind!r}.")


def warm_start_recipe(model_cfg: dict):
    """The warm-start recipe of `model.task` (sort_digits by default, or reverse_word) with `model.recipe`'s fields."""
    from ..headroom import WarmStartRecipe
    from ..headroom_reverse import ReverseRecipe

    recipes = {"sort_digits": WarmStartRecipe, "reverse_word": ReverseRecipe}
    task = model_cfg.get("task", "sort_digits")
    if task not in recipes:
        raise ValueError(f"model.task of a warm_start must be one of {sorted(recipes)}, got {task!r}.")
    return recipes[task](**(model_cfg.get("recipe") or {}))


def build_qwen_shaped_model(path: str | Path, seed: int = 0, dtype: str = "bfloat16",
                            tokenizer_from: str | None = None, **dimensions) -> Path:
    """Write a randomly initialised model with Qwen2.5-0.5B's architecture (Qwen2Config) and a tokenizer to `path`.

    The tokenizer is Qwen2.5's own when `tokenizer_from` names one that loads offline (a local path or a cached Hub
    id); otherwise the demo's character tokenizer, padded with filler tokens to the model's vocabulary size so that
    every sampled id decodes (vLLM detokenises its samples). Either way the weights are random: timing only.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    path = Path(path)
    dims = {**QWEN25_05B, **dimensions}
    tokenizer, source, loader = None, None, "fast"
    if tokenizer_from:
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_from, local_files_only=True)
            source, loader = tokenizer_from, "auto"
        except Exception:  # noqa: BLE001 - offline: fall back to the padded character tokenizer
            tokenizer = None
    if tokenizer is None:
        tokenizer = _padded_char_tokenizer(dims["vocab_size"])
        source = "trl_rapid.tiny character tokenizer padded with filler tokens"
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = Qwen2Config(**dims, pad_token_id=pad, eos_token_id=eos, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "bench_model.json").write_text(json.dumps(
        {"weights": "random", "note": RANDOM_WEIGHTS_NOTE, "architecture": "Qwen2.5-0.5B", "dimensions": dims,
         "tokenizer_source": source, "tokenizer_loader": loader}, indent=2))
    return path


def _padded_char_tokenizer(vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ..tiny import CHARACTERS, EOS, PAD

    tokens = [PAD, EOS, *CHARACTERS]
    tokens += [f"<f{i}>" for i in range(len(tokens), vocab_size)]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)


def _load_tokenizer(model_info: dict):
    # transformers 5 maps a Qwen2 config to Qwen2Tokenizer, which rebuilds a custom vocabulary: load the fast
    # tokenizer as written when the benchmark built it.
    if model_info["tokenizer"] == "fast":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_info["path"])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_info["path"])
