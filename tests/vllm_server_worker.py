"""Run by tests/test_vllm_server_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` (two CPU/gloo
trainer processes) against a `python -m trl_rapid.vllm_server` the test started, with filesystem weight sync.

    vllm_server_worker.py MODEL_DIR OUT_DIR BASE_URL PHASE     (PHASE: "first", or "resume" from OUT_DIR/checkpoint-2)

After every weight sync each process records the checksum of its own weights, and the main process the checksum of
the weights the engine now samples with (`rapid_weights_checksum` on every server worker). Every advantage is checked
against an independent recomputation on each process. "first" dumps its state at checkpoint-2 (state-first-rank<N>.pt);
"resume" dumps it right after the resume (state-resume-rank<N>.pt). Writes rank<N>-<PHASE>.json.
"""

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, TrainerCallback

from scale_out_worker import PROMPTS, dump_state
from helpers.trainer import RecordingTrainer
from trl_rapid import RapidConfig
from trl_rapid.tiny import repeat_digit_reward
from trl_rapid.vllm_server import server_collective_rpc

CHECKPOINT = 2


class Dumps(TrainerCallback):
    def __init__(self, trainer, out, phase):
        self.trainer, self.out, self.phase, self.steps = trainer, Path(out), phase, []

    def on_train_begin(self, args, state, control, **kwargs):
        if self.phase == "resume":
            dump_state(self.trainer, self.out / f"state-resume-rank{self.trainer.accelerator.process_index}.pt")

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if self.phase == "first" and state.global_step == CHECKPOINT:
            dump_state(self.trainer, self.out / f"state-first-rank{self.trainer.accelerator.process_index}.pt")


def checksum(trainer) -> float:
    """float64 sum of the weights as this process holds them (each tensor once: the tied lm_head is the embedding)."""
    with torch.no_grad():
        return sum(float(p.detach().double().sum()) for p in trainer.accelerator.unwrap_model(trainer.model).parameters())


def main(model_dir, out_dir, base_url, phase):
    args = RapidConfig(
        output_dir=out_dir, per_device_train_batch_size=8, num_generations=4, gradient_accumulation_steps=1,
        optimizer_steps_per_generation=2, max_completion_length=8, max_steps=6, learning_rate=1e-3,
        lr_scheduler_type="linear", logging_steps=1, report_to="none", bf16=False, save_strategy="steps",
        save_steps=CHECKPOINT, seed=0, use_cpu=True, disable_tqdm=True, use_vllm=True, vllm_mode="server",
        vllm_server_base_url=base_url, vllm_weight_sync_dir=str(Path(out_dir) / "weights"),
    )
    trainer = RecordingTrainer(model=model_dir, reward_funcs=repeat_digit_reward, args=args, train_dataset=PROMPTS,
                               processing_class=AutoTokenizer.from_pretrained(model_dir))
    generation = trainer.vllm_generation
    sync, syncs = generation.sync_weights, []

    def recorded_sync():
        sync()
        record = {"step": trainer.state.global_step, "local": checksum(trainer)}
        if trainer.accelerator.is_main_process:
            record["server"] = [r["sum"] for r in server_collective_rpc(generation.vllm_client, "rapid_weights_checksum")]
        syncs.append(record)

    generation.sync_weights = recorded_sync
    dumps = Dumps(trainer, out_dir, phase)
    trainer.add_callback(dumps)
    trainer.train(resume_from_checkpoint=str(Path(out_dir, f"checkpoint-{CHECKPOINT}")) if phase == "resume" else None)
    history = trainer.state.log_history
    errors = trainer.advantage_errors
    Path(out_dir, f"rank{trainer.accelerator.process_index}-{phase}.json").write_text(json.dumps({
        "world_size": trainer.accelerator.num_processes,
        "behaviour_logprobs": trainer.behaviour_logprobs,
        "steps": dumps.steps,
        "syncs": syncs,
        "generation_sizes": trainer.generation_sizes,
        "advantage_checks": len(errors),
        "max_advantage_error": max(errors) if errors else None,
        "logp_gaps": [h["sampling/sampling_logp_difference/max"] for h in history
                      if "sampling/sampling_logp_difference/max" in h],
        "weight_max_at_inner_step_0": [h["rapid/weight_max"] for h in history if h.get("rapid/inner_step") == 0],
    }))
    del trainer, generation, dumps
    gc.collect()
    dist.destroy_process_group()  # without it one rank can abort at exit


if __name__ == "__main__":
    main(*sys.argv[1:])
