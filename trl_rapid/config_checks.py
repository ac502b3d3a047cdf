"""Field checks RapidConfig runs first, before TRL's and transformers' `__post_init__`.

TRL 1.16 and transformers 5.17 accept many values that then crash far from their cause (`num_generations=0`: "integer
modulo by zero"), run as something else (`optimizer_steps_per_generation=True` is the int 1), or train nonsense
(`epsilon=-0.2`, a NaN learning rate). Each rule below names a field RAPID depends on, what it must be, and the fix.
All failing fields are reported in one `ValueError`.

Only values TRL itself cannot use are refused: TRL's documented alternatives stay valid (`scale_rewards=True/False`,
`max_completion_length=None`, `max_steps=-1`, `top_k=-1` or `0` for "no top-k", `max_grad_norm <= 0` for "no
clipping"). The command line and YAML give strings; `HfArgumentParser` converts them to the field's type before the
config is built, so these rules see the same values as a Python caller.

Where the allowed values of a choice field come from:
- RAPID's own fields (`baseline`, `behaviour_logprobs`, ...): the `choices` in the field's metadata (trl_rapid/config.py).
- TRL's fields (`loss_type`, `scale_rewards`, ...): the installed TRL's own code, read at run time
  (trl_rapid/trl_values.py), so values a newer TRL adds are accepted without a change here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any



@dataclass(frozen=True)
class Rule:
    """`field` must be a whole number / a real number in a range, or one of `choices`; `fix` says what to set."""

    field: str
    kind: str  # "whole", "real" or "choice"
    fix: str
    low: float | None = None  # bound on the value
    low_open: bool = False  # True: value > low, else value >= low
    high: float | None = None  # bound on the value
    high_open: bool = False  # True: value < high, else value <= high
    choices: tuple = ()  # kind "choice": filled in by `_with_choices` from the field's metadata or TRL's code
    optional: bool = False  # None allowed

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if value is None and self.optional:
            return None
        if self.kind == "choice":
            # `in` would accept 1 for True and 0 for False: compare the kind of value too.
            ok = any(value == choice and _same_kind(value, choice) for choice in self.choices)
            return None if ok else f"must be one of {', '.join(map(repr, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            given = "None" if value is None else f"a {type(value).__name__}"
            return f"must be a {self.describe()}, not {given}"
        if self.kind == "whole" and not isinstance(value, numbers.Integral):
            return f"must be a {self.describe()}"
        if not math.isfinite(value):
            return f"must be a finite {self.describe()}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            return f"must be a {self.describe()}"
        return None

    def describe(self) -> str:
        noun = "whole number" if self.kind == "whole" else "number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " ".join([noun, " and ".join(bounds)]).strip()


def _same_kind(a, b) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or type(a) is type(b)


def whole(field, fix, low=None, high=None, optional=False):
    return Rule(field, "whole", fix, low=low, high=high, optional=optional)


def real(field, fix, low=None, low_open=False, high=None, high_open=False, optional=False):
    return Rule(field, "real", fix, low=low, low_open=low_open, high=high, high_open=high_open, optional=optional)


def choice(field, fix):
    """A choice field: its allowed values are read when the config is checked (module docstring)."""
    return Rule(field, "choice", fix)


RULES = (
    # Batch geometry: G, N_step and H are built from these (RAPID needs whole groups in every optimizer step).
    whole("num_generations", "G, completions per prompt: e.g. num_generations=4 (the paper) or 8 (TRL's default).",
          low=2),
    whole("per_device_train_batch_size", "Completions per micro-batch per process: a multiple of num_generations, "
          "e.g. per_device_train_batch_size=8.", low=1),
    whole("gradient_accumulation_steps", "Micro-batches per optimizer step: 1 or more.", low=1),
    whole("steps_per_generation", "Micro-batches per inference batch, H × gradient_accumulation_steps; or leave it "
          "unset and set optimizer_steps_per_generation (H).", low=1, optional=True),
    whole("generation_batch_size", "N_inference per process group, a multiple of the global batch; or leave it unset "
          "and set optimizer_steps_per_generation (H).", low=1, optional=True),
    whole("num_iterations", "Passes over each inference batch: 1 (the paper) or more.", low=1),
    whole("num_generations_eval", "Completions per held-out prompt, or unset to use num_generations.", low=1,
          optional=True),
    whole("max_completion_length", "Tokens per completion: 1 or more (the paper's recipes use 2048).", low=1,
          optional=True),
    whole("max_steps", "Optimizer steps to train, or -1 to train num_train_epochs epochs.", low=-1),
    real("num_train_epochs", "Epochs to train: a number >= 0 (used when max_steps is -1).", low=0),
    # The estimator and the surrogate loss.
    real("eta", "η truncates the importance weights in the baseline: the paper uses eta=2.0.", low=0, low_open=True),
    real("epsilon", "PPO clip of the per-token ratio π_θ/µ: the paper uses epsilon=0.2.", low=0),
    real("epsilon_high", "Upper clip (DAPO: 0.28, CISPO: 5.0), or unset to use epsilon.", low=0, optional=True),
    real("delta", "Two-sided GRPO's upper ratio bound, recommended > 1 + epsilon; or unset.", low=0, low_open=True,
         optional=True),
    real("beta", "KL coefficient: 0.0 (the paper, no reference model) or a small positive value such as 0.04.",
         low=0),
    real("top_entropy_quantile", "Share of tokens (by entropy) kept in the loss: 1.0 keeps all.", low=0, high=1),
    choice("loss_type", "TRL's surrogate loss; TRL's default is 'dapo'."),
    choice("scale_rewards", "Advantage scaling: 'none' (the paper), 'group' or 'batch'."),
    choice("importance_sampling_level", "Ratio level of the clipped surrogate: 'token' (default) or 'sequence'."),
    # RAPID's own choices.
    choice("baseline", "'paper' is the paper's form; 'auto' picks by scale_rewards."),
    choice("behaviour_logprobs", "'auto' picks the source from the generation settings."),
    choice("micro_batch_layout", "'rows' shuffles the inference batch row by row (TRL's layout); 'groups' keeps each "
           "prompt's completions together."),
    choice("baseline_weight_source", "'cache' costs nothing; 'forward' recomputes the group members' weights "
           "exactly."),
    # Sampling: µ's log-probs are computed with this temperature, so it must be a usable one.
    real("temperature", "Sampling temperature: > 0, the paper uses 1.0 (greedy decoding is not a sampling policy).",
         low=0, low_open=True),
    real("top_p", "Nucleus sampling: in (0, 1], 1.0 turns it off.", low=0, low_open=True, high=1),
    whole("top_k", "Top-k sampling: 0 (or -1) turns it off.", low=-1),
    real("min_p", "Min-p sampling: in [0, 1], or unset.", low=0, high=1, optional=True),
    real("repetition_penalty", "Repetition penalty: > 0, 1.0 turns it off.", low=0, low_open=True),
    # Optimiser: a NaN here reaches every parameter at the first step.
    real("learning_rate", "A finite learning rate >= 0, e.g. learning_rate=1e-6 (the paper's recipes).", low=0),
    real("weight_decay", "A finite weight decay, e.g. 0.0."),
    real("max_grad_norm", "Gradient clipping norm: a finite number; <= 0 turns clipping off.",),
    real("warmup_steps", "Warm-up: a number of steps >= 1, or a share of training in [0, 1).", low=0),
    real("adam_beta1", "Adam β1 in [0, 1), e.g. 0.9.", low=0, high=1, high_open=True),
    real("adam_beta2", "Adam β2 in [0, 1), e.g. 0.999.", low=0, high=1, high_open=True),
    real("adam_epsilon", "Adam ε: a small positive number, e.g. 1e-8.", low=0, low_open=True),
    # vLLM (checked even without use_vllm: a value that cannot work is a typo either way).
    choice("vllm_mode", "'colocate' (engine inside the trainer) or 'server'."),
    choice("vllm_importance_sampling_mode", "TRL's vLLM importance-sampling mode; the default is 'sequence_mask'."),
    choice("vllm_dtype", "dtype of the colocated vLLM engine: 'auto' lets RAPID pick (float32 on CPU)."),
    choice("vllm_weight_sync", "'auto' picks NCCL with CUDA, else the filesystem."),
    real("vllm_gpu_memory_utilization", "Share of GPU memory for the colocated engine: in (0, 1], e.g. 0.3.", low=0,
         low_open=True, high=1),
)


# Flags RAPID reads: a string such as "false" would be truthy and silently switch them on.
FLAGS = ("use_vllm", "mask_truncated_completions", "vllm_importance_sampling_correction")
# Intervals used as `global_step % steps` by transformers when their strategy is "steps".
INTERVALS = (("logging_steps", "logging_strategy"), ("save_steps", "save_strategy"), ("eval_steps", "eval_strategy"))


def check_fields(config) -> None:
    """Raise one ValueError listing every field of `config` that breaks a rule, with its fix."""
    problems = []
    for rule in RULES:
        if not hasattr(config, rule.field):
            continue  # a field this TRL version does not have
        if rule.kind == "choice":
            rule = _with_choices(rule, config)
            if rule is None:
                continue  # TRL's values could not be read: TRL's own check stands
        value = getattr(config, rule.field)
        problem = rule.problem(value)
        if problem:
            problems.append(f"{rule.field}={value!r} {problem}. {rule.fix}")
    for flag in FLAGS:
        value = getattr(config, flag, False)
        if not isinstance(value, bool):
            problems.append(f"{flag}={value!r} must be True or False, not a {type(value).__name__}.")
    for interval, strategy in INTERVALS:
        value, how = getattr(config, interval, None), getattr(config, strategy, None)
        if str(getattr(how, "value", how)) == "steps" and value is not None:
            problem = real(interval, "").problem(value) or (None if value > 0 else "must be a number > 0")
            if problem:
                problems.append(f"{interval}={value!r} {problem} with {strategy}='steps'. Set a positive number of "
                                f"steps (or a share of training below 1), or another {strategy}.")
    weights = getattr(config, "reward_weights", None)
    if weights is not None and not all(
        isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in weights
    ):
        problems.append(f"reward_weights={weights!r} must hold one finite number per reward function, or be unset "
                        "(all 1.0).")
    if problems:
        raise ValueError("Invalid RapidConfig:\n  - " + "\n  - ".join(problems))


def _with_choices(rule: Rule, config) -> Rule | None:
    """`rule` with its allowed values: from the field's `choices` metadata where the config class declares them
    (RAPID's fields), else from the installed TRL's code (trl_rapid/trl_values.py); None if neither knows them."""
    from .trl_values import trl_choices, trl_version

    declared = {f.name: f.metadata.get("choices") for f in dataclasses.fields(config)}
    if declared.get(rule.field):
        return dataclasses.replace(rule, choices=tuple(declared[rule.field]))
    values = trl_choices().get(rule.field)
    if not values:
        return None
    strings = sorted(v for v in values if isinstance(v, str))
    fix = f"{rule.fix} (Values read from the installed TRL {trl_version()}.)"
    return dataclasses.replace(rule, choices=(*strings, *(v for v in values if not isinstance(v, str))), fix=fix)
