"""Run by tests/test_scale_out.py under `accelerate launch` (FSDP or DeepSpeed ZeRO-2/3 on 2 CPU processes, or 2
single-process "nodes").

    scale_out_worker.py MODEL_DIR OUT_DIR PHASE [full|lora|spanning]

PHASE "first": trains with a checkpoint every 2 steps; after checkpoint-4 each rank dumps its optimizer state, model
shard and learning rate (state-first-rank<N>.pt), writes ready-rank<N>.json (with its pid) and waits to be killed
(the test sends SIGKILL). PHASE "resume": resumes from the last checkpoint, dumps the same state right after it was
loaded (state-resume-rank<N>.pt), trains to the end, saves the model to OUT_DIR/final and the full weights as the
trainer holds them (full-weights.pt, main process), and writes rank<N>-resume.json. Both phases check every advantage
against an independent recomputation on each process (tests/test_trainer.py's check).
"""

import gc
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from helpers.trainer import RecordingTrainer  # the advantage check of tests/test_trainer.py, run on each process
from trl_rapid import RapidConfig
from trl_rapid.tiny import repeat_digit_reward

PROMPTS = Dataset.from_list([{"prompt": f"{i:03d}>", "target": f"{i:03d}"[-1]} for i in range(64)])
STOP_AT, MAX_STEPS = 4, 6


def _local(value):
    """A plain tensor copy of what this process holds (its shard of an FSDP2 DTensor)."""
    if hasattr(value, "to_local"):
        value = value.to_local()
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def dump_state(trainer, path):
    # The torch optimizer that holds Adam's state: accelerate wraps it; under DeepSpeed ZeRO it is the ZeRO
    # optimizer's base optimizer, over this process's partition of the fp32 master weights.
    base = trainer.optimizer
    while hasattr(base, "optimizer"):
        base = base.optimizer
    # Adam's state per master parameter, in the optimizer's own order (ZeRO-3 keys it by flat partitions that are not
    # in param_groups between steps, so torch's state_dict() cannot index it).
    state = [(_local(master), {key: _local(v) for key, v in values.items()}) for master, values in base.state.items()]
    torch.save({
        "master": {str(i): master for i, (master, _) in enumerate(state)},
        "optimizer": {i: values for i, (_, values) in enumerate(state)},
        "param_groups": [{k: v for k, v in group.items() if k != "params"} for group in base.param_groups],
        "params": {name: _local(p) for name, p in trainer.model.named_parameters() if p.requires_grad},
        "learning_rate": trainer.lr_scheduler.get_last_lr()[0],
        "global_step": trainer.state.global_step,
    }, path)


class Phases(TrainerCallback):
    def __init__(self, trainer, out_dir, phase):
        self.trainer, self.out, self.phase, self.steps = trainer, Path(out_dir), phase, []

    def rank(self):
        return self.trainer.accelerator.process_index

    def on_train_begin(self, args, state, control, **kwargs):
        if self.phase == "resume":  # the optimizer, scheduler and weights have just been restored
            dump_state(self.trainer, self.out / f"state-resume-rank{self.rank()}.pt")

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if self.phase == "first" and state.global_step == STOP_AT:  # checkpoint-4 is complete (renamed into place)
            dump_state(self.trainer, self.out / f"state-first-rank{self.rank()}.pt")
            report(self.trainer, self.out / f"ready-rank{self.rank()}.json", self.steps, pid=os.getpid())
            while True:  # the test kills every process with SIGKILL here
                time.sleep(1)


def report(trainer, path, steps, **extra):
    errors = trainer.advantage_errors
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    path.write_text(json.dumps({
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "fsdp": bool(trainer.is_fsdp_enabled),
        "sharded": type(next(trainer.model.parameters())).__name__,
        # parameter elements this process holds (all of them under DDP, its shard under FSDP, none under ZeRO-3)
        "local_numel": sum(_local(p).numel() for p in trainer.model.parameters()),
        "steps": steps,
        "global_step": trainer.state.global_step,
        "advantage_checks": len(errors),
        "max_advantage_error": max(errors) if errors else None,
        "rewards": rewards,
        **extra,
    }))


def main(model_dir, out_dir, phase, variant="full"):
    peft_config = None
    if variant == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    # "spanning": layout "groups" with a group spanning the 2 micro-batches of an optimizer step, so RapidTrainer runs
    # its extra no-grad forward pass over the step's micro-batches (under FSDP a collective too) before the
    # gradient-accumulation passes. The others run the default layout, "rows" (cached weights: no extra pass).
    batch = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, micro_batch_layout="groups") \
        if variant == "spanning" else dict(per_device_train_batch_size=4, gradient_accumulation_steps=1)
    args = RapidConfig(
        output_dir=out_dir, num_generations=4, **batch,
        optimizer_steps_per_generation=2, max_completion_length=4, learning_rate=5e-3, lr_scheduler_type="linear",
        max_steps=MAX_STEPS, logging_steps=1, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
        bf16=False, disable_tqdm=True, seed=0,
    )
    trainer = RecordingTrainer(model=model_dir, reward_funcs=repeat_digit_reward, args=args, train_dataset=PROMPTS,
                               processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=peft_config)
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if plugin is not None and plugin.zero_stage == 3:
        # Every tensor of the tiny model is below DeepSpeed's default persistence threshold (1e5 elements), so ZeRO-3
        # would keep them all whole on every process: 0 partitions every parameter, as for a real model.
        plugin.deepspeed_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    phases = Phases(trainer, out_dir, phase)
    trainer.add_callback(phases)
    trainer.train(resume_from_checkpoint=phase == "resume")
    final = Path(out_dir, "final")
    trainer.save_model(str(final))
    # A collective under FSDP and ZeRO-3: every process calls it (DeepSpeed wants its engine).
    full = trainer.accelerator.get_state_dict(trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model)
    if trainer.accelerator.is_main_process:
        torch.save({k: v.clone() for k, v in full.items()}, Path(out_dir, "full-weights.pt"))
    report(trainer, Path(out_dir, f"rank{trainer.accelerator.process_index}-{phase}.json"), phases.steps)
    del trainer, phases
    gc.collect()
    dist.destroy_process_group()  # without it one rank can abort at exit


if __name__ == "__main__":
    main(*sys.argv[1:])
