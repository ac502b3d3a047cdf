import json
import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from .config_checks import check_fields
from .estimator import BASELINES

BEHAVIOUR_LOGPROB_SOURCES = ("auto", "engine", "sampler", "trainer")
VLLM_WEIGHT_SYNCS = ("auto", "nccl", "filesystem")
LAYOUTS = ("rows", "groups")  # micro_batch_layout
WEIGHT_SOURCES = ("cache", "forward")  # baseline_weight_source
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # vLLM 0.31's ModelDType
DEFAULT_OPTIMIZER_STEPS_PER_GENERATION = 4
ADAPTIVE_H = "auto"


@dataclass
class RapidConfig(GRPOConfig):
    r"""
    Configuration class for [`RapidTrainer`], a [`~trl.GRPOConfig`] with the knobs of RAPID (arXiv 2510.03515).

    RAPID samples one large inference batch with the behaviour policy µ, then takes H off-policy optimizer steps on
    mini-batches of it. The paper's symbols map onto TRL's own fields:

    | paper | meaning | field(s) |
    |---|---|---|
    | `G` | completions per prompt | `num_generations` |
    | `N_inference` | completions sampled per outer step, all processes | `generation_batch_size` |
    | `N_step` | completions per optimizer step, all processes | `per_device_train_batch_size × gradient_accumulation_steps × world size` |
    | `H` | optimizer steps per inference batch, `N_inference / N_step` | `optimizer_steps_per_generation` (or `steps_per_generation / gradient_accumulation_steps`) |
    | `η` | importance-weight truncation | `eta` |

    Set at most one of `optimizer_steps_per_generation`, `steps_per_generation` and `generation_batch_size`. With none
    of them set, H defaults to 4 (the paper's headline MBPP+ setting); `H = 1` is on-policy group-relative policy
    gradient, which RAPID reduces to exactly.

    Defaults that differ from [`~trl.GRPOConfig`], to follow the paper's reference setup:
        scale_rewards (`str`, defaults to `"none"`):
            The paper's advantage is `R_i − b(x)` with no division by a reward standard deviation. `"group"` and
            `"batch"` still work and divide by the std of the raw rewards, as in TRL.

    Unchanged TRL defaults the paper relies on: `beta=0.0` (no KL term, no reference model), `epsilon=0.2` (PPO clip of
    the per-token ratio π_θ/µ), `num_iterations=1`. `loss_type` keeps TRL's default (`"dapo"`); every TRL loss type
    works, because RAPID only replaces the advantage.

    Parameters:
        eta (`float`, *optional*, defaults to `2.0`):
            η, the truncation threshold of the sequence importance weights in the group baseline:
            `b(x) = (1/G) Σ_j min(π_θ(y_j|x)/µ(y_j|x), η) R_j`. Must be > 0.
        optimizer_steps_per_generation (`int`, `"auto"` or `None`, *optional*, defaults to `None`):
            H, the number of optimizer steps taken on each inference batch. Sets `steps_per_generation = H ×
            gradient_accumulation_steps`. `"auto"`: adaptive H — the trainer samples `max_optimizer_steps_per_generation
            × N_step` completions per outer step and, as soon as an optimizer step's effective sample size falls
            below `adaptive_ess_threshold`, re-samples the rows it has not trained on yet with the current policy as
            the new µ. H then shrinks when the policy moves fast and stays at the maximum when it barely moves.
        max_optimizer_steps_per_generation (`int`, *optional*, defaults to `8`):
            With `optimizer_steps_per_generation="auto"`: the largest H, i.e. the size of the inference batch in
            optimizer steps.
        adaptive_ess_threshold (`float`, *optional*, defaults to `0.9`):
            With `optimizer_steps_per_generation="auto"`: the smallest ESS/G (effective sample size of the truncated
            weights per group, divided by G, averaged over the step's groups and processes) at which the rest of the
            inference batch is still used. In (0, 1]. 0.9 was chosen on a 1-seed pilot of the headroom task.
        baseline (`str`, *optional*, defaults to `"auto"`):
            Form of the importance-weighted group baseline: `"paper"` `(1/G) Σ_j w̄_j R_j`, the paper's form, which
            sits below the rewards when the truncated weights average below 1; `"self_normalized"`
            `Σ_j w̄_j R_j / Σ_j w̄_j` (the weights average to 1 inside the group, so b stays between the group's
            rewards); `"leave_one_out"` `(1/(G−1)) Σ_{j≠i} w̄_j R_j` (RLOO at H = 1). All three are the group mean at
            θ = µ. `"auto"` (resolved when the config is built) takes what measured best for the run's reward
            scaling: `"paper"` with `scale_rewards="none"` (the paper's own setting), `"self_normalized"` with
            `"group"` or `"batch"`, where a std division amplifies the paper form's offset
            (docs/benchmark/layout/README.md).
        behaviour_logprobs (`str`, *optional*, defaults to `"auto"`):
            Where µ's per-token log-probs come from. `"engine"`: the inference engine's sampling log-probs (vLLM, plain
            temperature sampling only); `"sampler"`: read off transformers `generate` itself (log_softmax of its raw
            logits / T at the sampled tokens; plain temperature sampling only), which saves the no-grad forward pass
            over the whole inference batch; `"trainer"`: recomputed by the trainer with the policy right after
            generation, before any update; `"auto"`: `"engine"` when vLLM generates with plain temperature sampling,
            `"sampler"` when transformers does so in full precision (no `bf16`/`fp16` autocast, no
            `cast_lm_head_to_fp32`), else `"trainer"`. The trainer also falls back to `"trainer"` when the model's own
            `generation_config` or the run adds logits processors (see `trl_rapid.sampler_logprobs`). With
            `"engine"`, TRL's separate vLLM importance-sampling factor is neutralised: the PPO ratio π_θ/µ already
            covers the trainer–engine mismatch.

        micro_batch_layout (`str`, *optional*, defaults to `"rows"`):
            How the inference batch is cut into optimizer steps. `"rows"`: shuffled row by row, as TRL's own big-batch
            mode does, so each step draws its N_step rows from (nearly) every prompt of the batch; the baseline still
            averages over each row's whole group, with the other members' weights from `baseline_weight_source`.
            `"groups"`: shuffled by whole groups, so a step holds N_step / G prompts and the loss's own forward pass
            gives every member's weight (exact, no bookkeeping) — and measurably less held-out accuracy per step.
        baseline_weight_source (`str`, *optional*, defaults to `"cache"`):
            With `micro_batch_layout="rows"`: where the weights of a row's group members come from. `"cache"`: the
            last forward pass that touched each member since µ sampled it (1 if none yet), no extra compute; a weight
            is at most `H × num_iterations − 1` optimizer steps old (logged as `rapid/weight_age`). `"forward"`: one
            no-grad forward pass over the members not yet seen at the current θ before each loss: exact, about
            (G − 1) extra forward rows per trained row.

    > vLLM options TRL does not expose (colocate mode builds the engine inside the trainer)

        vllm_dtype (`str`, *optional*, defaults to `"auto"`):
            dtype of the colocated engine. `"auto"`: vLLM's choice on GPU; `"float32"` on vLLM's CPU build, whose own
            choice would serve a float32 checkpoint in bfloat16 and drift from the trainer's log-probs.
        vllm_enforce_eager (`bool` or `None`, *optional*, defaults to `None`):
            Run the colocated engine without compilation or CUDA graphs. `None`: `True` on CPU, vLLM's default on GPU.
        vllm_engine_kwargs (`dict` or `str`, *optional*):
            Further `vllm.LLM` keyword arguments for the colocated engine (a JSON string on the command line), e.g.
            `{"max_num_batched_tokens": 16384, "kv_cache_memory_bytes": 4294967296}`. They win over TRL's values.
        vllm_weight_sync (`str`, *optional*, defaults to `"auto"`):
            Server mode only: how weights reach the server once per outer step. `"nccl"`: TRL's NCCL broadcast (GPUs,
            `trl vllm-serve`); `"filesystem"`: a safetensors folder the server reloads (`python -m
            trl_rapid.vllm_server`; no NCCL, works on CPU and across hosts that share storage); `"auto"`: NCCL when
            CUDA is available, else filesystem.
        vllm_weight_sync_dir (`str` or `None`, *optional*):
            Folder for `vllm_weight_sync="filesystem"`, visible to the server at the same path. Default:
            `<output_dir>/vllm-weights`.
    """

    eta: float = field(
        default=2.0,
        metadata={
            "help": "η: truncation threshold of the sequence importance weights π_θ/µ in RAPID's group baseline "
            "(paper default 2.0). Must be > 0."
        },
    )
    optimizer_steps_per_generation: int | str | None = field(
        default=None,
        metadata={
            "help": "H: optimizer steps per inference batch (N_inference / N_step). Sets steps_per_generation = H × "
            "gradient_accumulation_steps. Default: 4 when neither steps_per_generation nor generation_batch_size is "
            "set. 'auto': adaptive H, up to max_optimizer_steps_per_generation, driven by adaptive_ess_threshold."
        },
    )
    max_optimizer_steps_per_generation: int = field(
        default=8,
        metadata={"help": "Adaptive H only: the largest H (inference batch = this many optimizer steps)."},
    )
    adaptive_ess_threshold: float = field(
        default=0.9,
        metadata={
            "help": "Adaptive H only: once an optimizer step's ESS/G falls below this, the rows of the inference batch "
            "not trained on yet are re-sampled with the current policy. In (0, 1]."
        },
    )
    baseline: str = field(
        default="auto",
        metadata={
            "help": "Importance-weighted group baseline: 'paper' ((1/G) Σ w̄R), 'self_normalized' (Σ w̄R / Σ w̄), "
            "'leave_one_out' ((1/(G−1)) Σ_{j≠i} w̄R; RLOO at H = 1) or 'auto' (default: 'paper' with "
            "scale_rewards='none', 'self_normalized' with 'group' or 'batch'). Self-normalising keeps b between the "
            "group's rewards, so the std scaling does not amplify an offset: it matters at high learning rates "
            "(docs/benchmark/layout/README.md). All forms cost the same.",
            "choices": [*BASELINES, "auto"],
        },
    )
    behaviour_logprobs: str = field(
        default="auto",
        metadata={
            "help": "Source of the behaviour log-probs µ: 'engine' (vLLM sampling log-probs), 'sampler' (read off "
            "transformers generate, no extra forward pass), 'trainer' (recomputed right after generation) or 'auto' "
            "(engine with vLLM, sampler with full-precision transformers generation, each under plain temperature "
            "sampling only; else trainer).",
            "choices": list(BEHAVIOUR_LOGPROB_SOURCES),
        },
    )
    micro_batch_layout: str = field(
        default="rows",
        metadata={
            "help": "'rows' (default): the inference batch is shuffled row by row, as TRL does, so an optimizer step "
            "draws from every prompt; the baseline still spans each row's whole group. Buys the accuracy whole groups "
            "lose against TRL's steps_per_generation; costs a per-row weight cache (well under one percent of a step). "
            "'groups': whole groups per micro-batch (N_step / G prompts per step), every weight from the loss's own "
            "forward pass (the paper's form). Evidence: docs/benchmark/layout/README.md.",
            "choices": list(LAYOUTS),
        },
    )
    baseline_weight_source: str = field(
        default="cache",
        metadata={
            "help": "Layout 'rows' only: the group members' weights in the baseline. 'cache' (default): from the last "
            "forward pass that touched each member (1 until trained; at most H × num_iterations − 1 steps old, "
            "logged as rapid/weight_age), no extra compute. 'forward': an exact no-grad forward over the members, "
            "about G − 1 extra forward rows per trained row; it bought no measurable accuracy "
            "(docs/benchmark/layout/README.md).",
            "choices": list(WEIGHT_SOURCES),
        },
    )
    vllm_dtype: str = field(
        default="auto",
        metadata={"help": "dtype of the colocated vLLM engine; 'auto' = vLLM's choice on GPU, float32 on CPU.",
                  "choices": list(VLLM_DTYPES)},
    )
    vllm_enforce_eager: bool | None = field(
        default=None,
        metadata={"help": "Colocated engine without compilation/CUDA graphs. None: True on CPU, vLLM's default on GPU."},
    )
    vllm_engine_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Extra vllm.LLM keyword arguments for the colocated engine (JSON string on the CLI)."},
    )
    vllm_weight_sync: str = field(
        default="auto",
        metadata={
            "help": "Server mode: 'nccl' (TRL), 'filesystem' (safetensors folder + reload, no NCCL) or 'auto' (NCCL "
            "with CUDA, else filesystem).",
            "choices": list(VLLM_WEIGHT_SYNCS),
        },
    )
    vllm_weight_sync_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for vllm_weight_sync='filesystem', shared with the server. Default: "
                  "<output_dir>/vllm-weights."},
    )
    scale_rewards: str = field(
        default="none",
        metadata={
            "help": "Reward scaling of the advantage: 'none' (paper, default), 'group' or 'batch' (divide by the std "
            "of the raw rewards within the group or the batch)."
        },
    )

    def __post_init__(self):
        check_fields(self)  # before TRL's own __post_init__, which crashes with unrelated messages on some of them
        self._resolve_steps_per_generation()
        from .trainer.scale_out import check_launch_environment

        check_launch_environment(self)  # no GPU and no use_cpu: before transformers builds a DeepSpeed plugin
        super().__post_init__()
        self._check_rapid_consistency()

    def _resolve_steps_per_generation(self):
        h = self.optimizer_steps_per_generation
        if isinstance(h, str) and h.strip().isdigit():  # the command line and YAML give strings
            h = self.optimizer_steps_per_generation = int(h)
        if h == ADAPTIVE_H:
            h_max = self.max_optimizer_steps_per_generation
            if isinstance(h_max, bool) or not isinstance(h_max, int) or h_max < 2:
                raise ValueError(
                    f"max_optimizer_steps_per_generation must be a whole number >= 2 with "
                    f"optimizer_steps_per_generation='auto', got {h_max!r}. The paper's largest H is 16."
                )
            t = self.adaptive_ess_threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
                raise ValueError(
                    f"adaptive_ess_threshold must be a number in (0, 1], got {t!r}. 0.9 (the default) keeps a batch "
                    "while its weights still look on-policy."
                )
            if self.steps_per_generation is not None or self.generation_batch_size is not None:
                raise ValueError(
                    "optimizer_steps_per_generation='auto' sizes the inference batch from "
                    "max_optimizer_steps_per_generation; do not also set steps_per_generation or generation_batch_size."
                )
            if self.num_iterations != 1:
                raise ValueError(
                    f"optimizer_steps_per_generation='auto' needs num_iterations=1, got {self.num_iterations}: adaptive "
                    "H decides how long one pass over the inference batch lasts."
                )
            self._h_set_by = None
            self.steps_per_generation = h_max * self.gradient_accumulation_steps
            return
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
            raise ValueError(
                f"optimizer_steps_per_generation (H) must be a whole number >= 1 or 'auto', got {h!r}. Use 1 for "
                "on-policy training, the paper's 2, 4, 8 or 16, or 'auto' for adaptive H."
            )
        # TRL fills in whichever of the two it was not given; remember which one the user set, for error messages.
        self._h_set_by = (
            "generation_batch_size"
            if self.generation_batch_size is not None and self.steps_per_generation is None
            else "steps_per_generation"
        )
        if self.steps_per_generation is None and self.generation_batch_size is None:
            self._h_set_by = None
            self.steps_per_generation = (h or DEFAULT_OPTIMIZER_STEPS_PER_GENERATION) * self.gradient_accumulation_steps

    def _check_rapid_consistency(self):
        """Rules across fields, once TRL has filled in its own (each field's values: config_checks.py)."""
        ga, spg = self.gradient_accumulation_steps, self.steps_per_generation
        h = self.optimizer_steps_per_generation
        if self.baseline == "auto":
            self.baseline = "paper" if self.scale_rewards in ("none", False) else "self_normalized"
        if self.baseline == "paper" and self.scale_rewards not in ("none", False):
            warnings.warn(
                f"scale_rewards={self.scale_rewards!r} divides RAPID's advantage by a reward std, which amplifies "
                "the paper baseline's offset below the group's rewards (when the truncated weights average below 1). "
                "Consider baseline='self_normalized' (what baseline='auto' picks here), or the paper's "
                "scale_rewards='none'. Evidence: docs/benchmark/layout/README.md, 'Defaults chosen from this'.",
                stacklevel=3,
            )
        if h is not None and self._h_set_by is not None and spg != h * ga:
            raise ValueError(
                f"optimizer_steps_per_generation={h} and {self._h_set_by} both set H, and disagree "
                f"({self._h_set_by} gives H = {spg / ga:g}). Set only one of them."
            )
        if spg % ga != 0:
            hint = (
                f"generation_batch_size to a multiple of {self.per_device_train_batch_size * self.world_size * ga}"
                if self._h_set_by == "generation_batch_size"
                else f"steps_per_generation to a multiple of {ga}"
            )
            raise ValueError(
                f"H = steps_per_generation / gradient_accumulation_steps = {spg}/{ga} is not a whole number of "
                f"optimizer steps. Set {hint}, or set optimizer_steps_per_generation (H) instead."
            )

        group, per_process_step = self.num_generations, self.per_device_train_batch_size * ga
        if per_process_step % group != 0:
            raise ValueError(
                f"A prompt's group of num_generations={group} completions must fit whole into one process's optimizer "
                f"step, which holds per_device_train_batch_size × gradient_accumulation_steps = "
                f"{self.per_device_train_batch_size} × {ga} = {per_process_step} completions. Make that product a "
                f"multiple of {group} (e.g. per_device_train_batch_size={group}), or change num_generations."
            )

        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported by RAPID: the "
                "importance-weighted baseline needs one raw reward per completion. Use 'sum_then_normalize'."
            )

        if self.behaviour_logprobs == "engine":
            if not self.use_vllm:
                raise ValueError(
                    "behaviour_logprobs='engine' needs an engine that returns sampling log-probs, i.e. use_vllm=True. "
                    "With transformers generation set behaviour_logprobs='trainer' (or 'auto')."
                )
            if self.sampling_filters:
                raise ValueError(
                    f"behaviour_logprobs='engine' needs plain temperature sampling, but {', '.join(self.sampling_filters)} "
                    "filter the engine's distribution: its log-probs would no longer be comparable with the trainer's, "
                    "which only apply the temperature. Set behaviour_logprobs='trainer' (or 'auto'), or drop those "
                    "settings."
                )
            if not self.vllm_importance_sampling_correction:
                raise ValueError(
                    "behaviour_logprobs='engine' needs vllm_importance_sampling_correction=True: RapidTrainer keeps "
                    "TRL's recomputed log-probs for the engine/trainer gap metric and for tokens vLLM cannot score, and "
                    "neutralises TRL's correction factor itself. Set it to True, or behaviour_logprobs='trainer'."
                )
        if self.behaviour_logprobs == "sampler":
            if self.use_vllm or self.use_transformers_continuous_batching:
                raise ValueError(
                    "behaviour_logprobs='sampler' reads µ off transformers `generate`; with "
                    f"{'use_vllm' if self.use_vllm else 'use_transformers_continuous_batching'}=True another sampler "
                    "runs. Set behaviour_logprobs='engine' (vLLM) or 'trainer' (or 'auto')."
                )
            if self.sampling_filters:
                raise ValueError(
                    f"behaviour_logprobs='sampler' needs plain temperature sampling, but {', '.join(self.sampling_filters)} "
                    "change the sampler's distribution, which the trainer's log-probs (temperature only) do not "
                    "reproduce. Set behaviour_logprobs='trainer' (or 'auto'), or drop those settings."
                )

        if isinstance(self.vllm_engine_kwargs, str):
            try:
                self.vllm_engine_kwargs = json.loads(self.vllm_engine_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"vllm_engine_kwargs must be a dict or a JSON object string, got {self.vllm_engine_kwargs!r} "
                    f"({error}). Example: '{{\"max_num_batched_tokens\": 16384}}'."
                ) from None
        if self.vllm_engine_kwargs is not None and not isinstance(self.vllm_engine_kwargs, dict):
            raise ValueError(f"vllm_engine_kwargs must be a dict, got {type(self.vllm_engine_kwargs).__name__}.")
        if self.vllm_weight_sync != "auto" and not (self.use_vllm and self.vllm_mode == "server"):
            raise ValueError(
                f"vllm_weight_sync={self.vllm_weight_sync!r} only applies to use_vllm=True with vllm_mode='server' "
                "(colocate mode syncs in memory). Leave it at 'auto'."
            )

    @property
    def sampling_filters(self) -> list[str]:
        """Sampling settings that make the engine's distribution differ from temperature-scaled π (TRL's log-probs)."""
        filters = []
        if self.top_p < 1.0:
            filters.append(f"top_p={self.top_p}")
        if self.top_k and self.top_k > 0:
            filters.append(f"top_k={self.top_k}")
        if self.min_p:
            filters.append(f"min_p={self.min_p}")
        if self.repetition_penalty != 1.0:
            filters.append(f"repetition_penalty={self.repetition_penalty}")
        if self.generation_kwargs:
            filters.append(f"generation_kwargs={self.generation_kwargs}")
        return filters

    @property
    def resolved_behaviour_logprobs(self) -> str:
        """'engine', 'sampler' or 'trainer': where µ comes from. 'auto' takes the sampler's log-probs only where they
        equal the trainer's to float rounding: plain temperature sampling, and for transformers generation no
        autocast or float32 LM head on the trainer's side only."""
        if self.behaviour_logprobs != "auto":
            return self.behaviour_logprobs
        if self.sampling_filters:
            return "trainer"
        if self.use_vllm:
            return "engine" if self.vllm_importance_sampling_correction else "trainer"
        full_precision = not (self.bf16 or self.fp16 or self.cast_lm_head_to_fp32)
        return "sampler" if full_precision and not self.use_transformers_continuous_batching else "trainer"

    @property
    def adaptive_h(self) -> bool:
        """True when the trainer chooses H from the importance weights (`optimizer_steps_per_generation="auto"`)."""
        return self.optimizer_steps_per_generation == ADAPTIVE_H

    @property
    def num_optimizer_steps_per_generation(self) -> int:
        """H, resolved: optimizer steps the trainer takes on each inference batch (its maximum with adaptive H)."""
        return self.steps_per_generation // self.gradient_accumulation_steps
