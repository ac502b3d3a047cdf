"""Adaptive H on the tiny model: H shrinks when the policy moves fast, stays at the maximum when it barely moves."""

import pytest
from helpers.trainer import RecordingTrainer, logs_with, train


class ResampleRecorder(RecordingTrainer):
    """Also records, per generation call, the prompts it sampled (to check that a re-sample keeps the prompts)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampled_prompts = []

        self.token_ratios = []  # completion tokens of a micro-step / the token normaliser TRL's dapo loss divides by

    def _generate_and_score_completions(self, inputs):
        if self.model.training:
            self.sampled_prompts.append(sorted(x["prompt"] for x in inputs))
        return super()._generate_and_score_completions(inputs)

    def _compute_loss(self, model, inputs):
        if self.model.training:  # TRL 1.16's dapo normaliser, one process: num_items_in_batch × GA / steps_per_generation
            normaliser = inputs["num_items_in_batch"] * self.args.gradient_accumulation_steps / self.args.steps_per_generation
            self.token_ratios.append((inputs["completion_mask"].sum() / normaliser).item())
        return super()._compute_loss(model, inputs)


def adaptive(tiny_model_dir, tmp_path, **overrides):
    settings = dict(optimizer_steps_per_generation="auto", max_optimizer_steps_per_generation=4,
                    adaptive_ess_threshold=0.9, max_steps=8, trainer_cls=ResampleRecorder)
    settings.update(overrides)
    return train(tiny_model_dir, tmp_path, **settings)


def test_h_reaches_the_maximum_when_the_policy_barely_moves(tiny_model_dir, tmp_path):
    trainer = adaptive(tiny_model_dir, tmp_path, learning_rate=1e-7)
    rule = trainer._adaptive_h
    assert rule.h_history == [4, 4] and rule.resamples == 0 and rule.wasted_rows == 0
    assert trainer.generation_sizes == [16, 16]  # one call per outer step of N_inference = 4 × N_step
    assert [h["rapid/h"] for h in logs_with(trainer, "rapid/h")] == [4.0, 4.0]


@pytest.mark.parametrize("layout", ["rows", "groups"])
def test_h_shrinks_when_the_learning_rate_is_large(tiny_model_dir, tmp_path, layout):
    trainer = adaptive(tiny_model_dir, tmp_path, learning_rate=5e-2, micro_batch_layout=layout)
    rule = trainer._adaptive_h
    assert trainer.state.global_step == 8
    assert rule.resamples >= 1 and min(rule.h_history) < 4
    assert sum(rule.h_history) == 8  # every optimizer step is served by exactly one sample
    # the stale rows were sampled and never trained on: counted as waste (N_step = 4 rows per remaining step)
    assert rule.wasted_rows > 0 and rule.wasted_rows % 4 == 0
    # a re-sample draws the same prompts as the rows it replaces, and the estimator stays exact on fresh rows (under
    # "rows", the freshness rule of the cache: a re-sampled row's weight is 1 until it is trained)
    assert len(trainer.generation_sizes) == 2 + rule.resamples
    assert sum(trainer.generation_sizes) == 2 * 16 + rule.wasted_rows  # a re-sample replaces exactly the stale rows
    assert max(trainer.advantage_errors) < 1e-5
    logged = logs_with(trainer, "rapid/wasted_completions")
    assert logged[-1]["rapid/wasted_completions"] == rule.wasted_rows
    assert logged[-1]["rapid/resamples"] == rule.resamples
    # the loss is normalised by one optimizer step's tokens on re-sampled steps too (dapo, TRL's default loss): the
    # mean ratio stays near 1 (a part-buffer normalised as a full one would read 2–4 here)
    assert trainer.args.loss_type == "dapo"
    assert 0.7 < sum(trainer.token_ratios) / len(trainer.token_ratios) < 1.4
    assert max(trainer.token_ratios) < 1.8
