"""A tiny model, tokenizer and task built locally: the embedded default for demos, tests and CPU benchmarks.

Nothing here touches a model hub. The model and tokenizer are written with `save_pretrained` and read back with the
ordinary `from_pretrained` loaders, so every caller exercises the same loading code as a real checkpoint.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from datasets import Dataset

PAD, EOS = "<pad>", "<eos>"
# One token per character: digits, lower-case letters and a little punctuation.
CHARACTERS = list(string.digits + string.ascii_lowercase + " :=+-?>")


def build_tokenizer():
    """A character-level fast tokenizer (one token per character) with `<pad>` and `<eos>`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([PAD, EOS, *CHARACTERS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, clean_up_tokenization_spaces=False
    )


def build_tiny_model(
    path: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Llama-shaped causal LM and its tokenizer to `path`; return the path.

    `head_dim = hidden_size / num_heads` defaults to 64 because vLLM's CPU attention kernels reject head_dim < 32.
    Llama rather than Qwen2: transformers 5 maps a Qwen2 config to `Qwen2Tokenizer`, which rebuilds a custom vocabulary
    and drops spaces, while a Llama config lets `AutoTokenizer` load the saved tokenizer as written.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig

    path = Path(path)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        dtype="float32",
    )
    torch.manual_seed(seed)
    # Under a DeepSpeed ZeRO-3 launch transformers would build the model inside `deepspeed.zero.Init`, whose parameter
    # broadcasts are collectives: the one process that writes the model (the script's main_process_first) would wait
    # for the others forever. A model built to be written to disk is never partitioned.
    try:
        from transformers.modeling_utils import set_zero3_state as not_partitioned
    except ImportError:  # a transformers without it
        from contextlib import nullcontext as not_partitioned

    with not_partitioned():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The demo task: "repeat the digit". A prompt such as "483>" asks the model to answer with its last digit, repeated.
# Each of the first `TARGET_LENGTH` completion characters scores 1 if it is that digit and `OTHER_DIGIT_CREDIT` if it
# is another digit; the reward is their mean. A random policy scores about 0.03, a solved task 1. The partial credit
# gives a randomly initialised model a gradient from its first batch; reaching 1 still needs the policy to read its
# prompt, so a reward near 1 means the model learned the task, not a fixed string.
# ---------------------------------------------------------------------------------------------------------------------
TARGET_LENGTH = 4
OTHER_DIGIT_CREDIT = 0.25


def make_repeat_digit_dataset(num_prompts: int, seed: int = 0, prompt_digits: int = 3) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        digits = "".join(rng.choice(string.digits) for _ in range(prompt_digits))
        rows.append({"prompt": f"{digits}>", "target": digits[-1]})
    return Dataset.from_list(rows)


def repeat_digit_reward(completions: list[str], target: list[str], **kwargs) -> list[float]:
    """TRL reward function for the demo task (see above); 1.0 exactly when the answer is right."""
    rewards = []
    for completion, digit in zip(completions, target, strict=True):
        head = completion[:TARGET_LENGTH].ljust(TARGET_LENGTH)
        score = sum(1.0 if ch == digit else OTHER_DIGIT_CREDIT if ch.isdigit() else 0.0 for ch in head)
        rewards.append(score / TARGET_LENGTH)
    return rewards
