"""RapidTrainer with each baseline form: the advantages it trains on equal an independent computation."""

import pytest

from helpers.trainer import logs_with, train


@pytest.mark.parametrize("baseline", ["self_normalized", "leave_one_out"])
def test_trainer_uses_the_configured_baseline(tiny_model_dir, tmp_path, baseline):
    trainer = train(tiny_model_dir, tmp_path, baseline=baseline, learning_rate=2e-2, max_steps=3)
    assert trainer.state.global_step == 3
    assert max(trainer.advantage_errors) < 1e-5
    # off-policy steps happened (weights moved), so the form mattered
    assert trainer.max_log_weight > 1e-3
    assert logs_with(trainer, "rapid/ess")
