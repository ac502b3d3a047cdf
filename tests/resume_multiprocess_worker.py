"""Run by tests/test_resume_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` (two CPU/gloo
processes): trains RapidTrainer with a checkpoint every 2 steps, either stopping after step STOP_AT (the run is
interrupted) or resuming from the last checkpoint; writes rank<N>-<PHASE>.json with the steps this launch ran.

    resume_multiprocess_worker.py MODEL_DIR OUT_DIR PHASE [STOP_AT]   (PHASE: "first" or "resume")
"""

import gc
import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.checkpoints import NonFiniteWeightsError
from trl_rapid.tiny import repeat_digit_reward

PROMPTS = Dataset.from_list([{"prompt": f"{i:03d}>", "target": f"{i:03d}"[-1]} for i in range(64)])


class StopAt(TrainerCallback):
    """Records each optimizer step; asks the trainer to stop after step `stop_at` (its checkpoint is still saved)."""

    def __init__(self, stop_at):
        self.stop_at, self.steps = stop_at, []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if state.global_step == self.stop_at:
            control.should_training_stop = True


def main(model_dir: str, out_dir: str, phase: str, stop_at: str = "0"):
    args = RapidConfig(
        output_dir=out_dir, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=4,
        optimizer_steps_per_generation=2, max_completion_length=4, learning_rate=5e-3, lr_scheduler_type="linear",
        max_steps=6, logging_steps=1, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True, bf16=False,
        disable_tqdm=True, seed=0,
    )
    steps = StopAt(int(stop_at))
    trainer = RapidTrainer(model=model_dir, reward_funcs=repeat_digit_reward, args=args, train_dataset=PROMPTS,
                           processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[steps])
    trainer.train(resume_from_checkpoint=phase == "resume")
    result = {
        "world_size": trainer.accelerator.num_processes,
        "device": str(trainer.args.device),
        "steps": steps.steps,
        "global_step": trainer.state.global_step,
        "learning_rate": trainer.lr_scheduler.get_last_lr()[0],
        "optimizer_steps_in_state": [int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()][:1],
    }
    if phase == "resume":
        # A NaN in one parameter (the same on both ranks, as DDP keeps them) is refused, and counted once.
        with torch.no_grad():
            trainer.model.model.embed_tokens.weight[0, 0] = math.nan
        try:
            trainer.save_model(str(Path(out_dir, "nan-model")))
        except NonFiniteWeightsError as error:
            result["nan_error"] = str(error)
    Path(out_dir, f"rank{trainer.accelerator.process_index}-{phase}.json").write_text(json.dumps(result))
    # The caught error's traceback is a reference cycle holding the trainer (its DDP model, the process group) alive;
    # freed at interpreter exit, after destroy_process_group, it hung rank 0 in 4 of 7 runs. Free it first.
    gc.collect()
    dist.destroy_process_group()  # without it one rank can abort at exit


if __name__ == "__main__":
    main(*sys.argv[1:])
