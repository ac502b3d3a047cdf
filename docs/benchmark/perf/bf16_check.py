# µ from the sampler vs TRL's recompute under bf16 (CPU autocast), for a bf16-weight and a fp32-weight tiny model.
import os, sys, torch
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
import transformers; transformers.logging.set_verbosity_error()
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward
import tempfile
from trl_rapid.tiny import build_tiny_model
path = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
class T(RapidTrainer):
    batches = None
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training and self.batches is None:
            self.batches = {k: v.clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
        return out
def run(src, dtype, bf16):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    args = RapidConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, num_generations=8, optimizer_steps_per_generation=2,
                       max_completion_length=32, max_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=bf16,
                       disable_tqdm=True, seed=0, behaviour_logprobs=src)
    t = T(model=model, reward_funcs=repeat_digit_reward, args=args, train_dataset=make_repeat_digit_dataset(64),
          processing_class=AutoTokenizer.from_pretrained(path))
    t.train(); return t.batches
for dtype, bf16 in [(torch.float32, False), (torch.float32, True), (torch.bfloat16, True)]:
    a, b = run("sampler", dtype, bf16), run("trainer", dtype, bf16)
    same = torch.equal(a["completion_ids"], b["completion_ids"])
    m = a["completion_mask"].bool()
    d = (a["old_per_token_logps"] - b["old_per_token_logps"])[m].abs()
    seq = ((a["old_per_token_logps"] - b["old_per_token_logps"]) * m).sum(1).abs()
    print(f"weights {dtype}, bf16={bf16}: same samples {same}, per-token |Δµ| max {d.max():.3g} mean {d.mean():.3g}, per-sequence |Δ log µ| max {seq.max():.3g}")
