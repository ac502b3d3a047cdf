"""Run by tests/test_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` (two CPU/gloo processes).

Each rank trains RapidTrainer and records, for every generation call, its prompts, group ids, the rewards RapidTrainer
kept for its rows, and the rewards recomputed here from its own decoded completions; then writes rank<N>.json.
"""

import gc
import json
import sys
from pathlib import Path

import torch.distributed as dist
from transformers import AutoTokenizer

from trl_rapid import RapidConfig, RapidTrainer
from datasets import Dataset

from trl_rapid.tiny import repeat_digit_reward
from trl_rapid.trainer import GROUP_IDS, REWARDS


# Distinct prompts, so the test can tell the two processes' groups apart.
UNIQUE_PROMPTS = Dataset.from_list([{"prompt": f"{i:03d}>", "target": f"{i:03d}"[-1]} for i in range(64)])


class CheckedTrainer(RapidTrainer):
    records: list = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            completions = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
            self.records.append({
                "prompts": [x["prompt"] for x in inputs],
                "groups": output[GROUP_IDS].tolist(),
                "rewards": output[REWARDS].tolist(),
                "recomputed": repeat_digit_reward(completions, [x["target"] for x in inputs]),
            })
        return output


def main(model_dir: str, out_dir: str, mode: str = "fixed"):
    # "adaptive": H chosen by the trainer; a large learning rate and a strict threshold make it re-sample often.
    h = dict(optimizer_steps_per_generation=3, learning_rate=5e-3) if mode == "fixed" else dict(
        optimizer_steps_per_generation="auto", max_optimizer_steps_per_generation=3, adaptive_ess_threshold=0.99,
        learning_rate=5e-2)
    args = RapidConfig(
        output_dir=out_dir, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4,
        max_completion_length=4, max_steps=6, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, disable_tqdm=True, seed=0, **h,
    )
    trainer = CheckedTrainer(model=model_dir, reward_funcs=repeat_digit_reward, args=args,
                             train_dataset=UNIQUE_PROMPTS,
                             processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "records": trainer.records,
        "logs": trainer.state.log_history,
        "h_history": trainer._adaptive_h.h_history if trainer._adaptive_h else None,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    # A trainer (and its DDP model) freed only at interpreter exit, after destroy_process_group, can hang a rank
    # (seen in tests/resume_multiprocess_worker.py, and once here): free it first.
    del trainer
    gc.collect()
    dist.destroy_process_group()  # without it one rank can abort at exit


if __name__ == "__main__":
    main(*sys.argv[1:])
