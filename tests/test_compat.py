"""trl_rapid.compat: the installed TRL / transformers / accelerate / vLLM are the versions whose internals it mirrors,
pyproject.toml pins those, and TRL's real GRPOTrainer calls things in the order the advantage adapter relies on."""

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from trl import GRPOTrainer

from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.compat import MIRRORED_VERSIONS, installed_version, version_mismatch
from trl_rapid.compat.grpo import GRPOForwardAdapter
from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@pytest.mark.parametrize("package", sorted(MIRRORED_VERSIONS))
def test_installed_version_is_the_mirrored_one(package):
    if package == "vllm" and installed_version("vllm") is None:
        pytest.skip("vLLM is not installed (optional): its mirrors are not in use")
    problem = version_mismatch(package)
    assert problem is None, problem


@pytest.mark.parametrize("package", sorted(MIRRORED_VERSIONS))
def test_pyproject_pins_the_mirrored_version(package):
    # A regex, not tomllib: requires-python is >= 3.10, and tomllib is 3.11+.
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)\s*((?:==|>=|<=|~=|<|>)[^";]*)', PYPROJECT.read_text()))
    assert pins.get(package) == f"=={MIRRORED_VERSIONS[package]}", (
        f"pyproject.toml pins {package}{pins.get(package, ' (nothing)')}, but trl_rapid.compat mirrors "
        f"{package} {MIRRORED_VERSIONS[package]} exactly: pin {package}=={MIRRORED_VERSIONS[package]}."
    )


# ---------------------------------------------------------------------------------------------------------------------
# The call order of TRL's GRPOTrainer that compat/grpo.py relies on, on the real TRL
# ---------------------------------------------------------------------------------------------------------------------
def _config(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                    optimizer_steps_per_generation=3, max_completion_length=4, learning_rate=1e-2, max_steps=3,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                    disable_tqdm=True, seed=0)
    settings.update(overrides)
    return RapidConfig(**settings)


def _train(trainer_cls, tiny_model_dir, tmp_path, **overrides):
    trainer = trainer_cls(model=tiny_model_dir, reward_funcs=repeat_digit_reward, args=_config(tmp_path, **overrides),
                          train_dataset=make_repeat_digit_dataset(16),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.train()
    return trainer


class HookRecorder(RapidTrainer):
    """Records every call of the two hooks and of TRL's loss, and the model's forward passes with and without grad."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []

        def forward(module, args, kwargs):
            if kwargs.get("fused_lm_head"):  # TRL's `_get_per_token_logps_and_entropies` forward
                self.events.append("forward" if torch.is_grad_enabled() else "no-grad forward")

        self.model.register_forward_pre_hook(forward, with_kwargs=True)

    def behaviour_logps_from_sampler(self, input_ids, attention_mask, logits_to_keep):
        behaviour = super().behaviour_logps_from_sampler(input_ids, attention_mask, logits_to_keep)
        self.events.append("µ from the sampler" if behaviour is not None else "µ declined")
        return behaviour

    def advantages_from_loss_forward(self, micro_batch, policy_logps):
        assert not policy_logps.requires_grad and policy_logps.shape == micro_batch["completion_ids"].shape
        self.events.append("advantage")
        return super().advantages_from_loss_forward(micro_batch, policy_logps)

    def _compute_loss(self, model, inputs):
        self.events.append("loss")
        return super()._compute_loss(model, inputs)


def test_trl_runs_the_mu_pass_first_and_each_loss_forward_before_its_advantages(tiny_model_dir, tmp_path):
    # beta > 0: TRL also scores the reference model after µ; the sampler must answer µ only, not the reference.
    trainer = _train(HookRecorder, tiny_model_dir, tmp_path, beta=0.05, behaviour_logprobs="sampler")
    assert trainer.behaviour_logprobs == "sampler"
    # One generation (µ from the sampler, then the reference model's no-grad pass on its own model), then H = 3
    # micro-batches, each: the loss, its one forward with grad, then its advantage.
    assert trainer.events == ["µ from the sampler"] + ["loss", "forward", "advantage"] * 3, trainer.events


def test_a_trl_that_reads_the_advantages_before_the_forward_fails_loudly(tiny_model_dir, tmp_path):
    class AdvantagesFirstGRPO(GRPOTrainer):  # TRL 1.16.0's loss, preceded by an early read of the advantages
        def _compute_loss(self, model, inputs):
            inputs["advantages"]
            return super()._compute_loss(model, inputs)

    class Trainer(RapidTrainer, AdvantagesFirstGRPO):  # MRO: ..., GRPOForwardAdapter, AdvantagesFirstGRPO, GRPOTrainer
        pass

    assert Trainer.__mro__.index(GRPOForwardAdapter) + 1 == Trainer.__mro__.index(AdvantagesFirstGRPO)
    with pytest.raises(RuntimeError, match=r"TRL changed the order .*read the advantages before its forward.*1\.16\.0"):
        _train(Trainer, tiny_model_dir, tmp_path)


def test_a_trl_whose_loss_runs_no_forward_fails_loudly(tiny_model_dir, tmp_path):
    class NoForwardGRPO(GRPOTrainer):  # a loss that does not go through `_get_per_token_logps_and_entropies`
        def _compute_loss(self, model, inputs):
            return torch.zeros((), requires_grad=True)

    class Trainer(RapidTrainer, NoForwardGRPO):
        pass

    with pytest.raises(RuntimeError, match=r"TRL changed the order .*_compute_loss ran no forward pass"):
        _train(Trainer, tiny_model_dir, tmp_path)
