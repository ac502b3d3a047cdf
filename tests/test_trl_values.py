"""TRL's allowed values for its choice fields are read from the installed TRL at run time (trl_rapid/trl_values.py),
so RapidConfig neither refuses a value a newer TRL adds nor lets a typo through to the middle of a run."""

import dataclasses
import textwrap

import pytest
import trl

from trl_rapid import RapidConfig
from trl_rapid.trl_values import CHOICE_FIELDS, trl_choices, values_in_help, values_in_source

BASE = {"output_dir": "unused", "report_to": "none", "use_cpu": True, "bf16": False,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4}


def test_every_choice_field_is_read_from_the_installed_trl():
    # Fails loudly when TRL moves or rewrites the code these values are read from: fix trl_values.py then.
    read = trl_choices()
    defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    for field in CHOICE_FIELDS:
        assert field in read, f"could not read TRL {trl.__version__}'s values of {field} (trl_rapid/trl_values.py)"
        assert defaults[field] in read[field]
    # What TRL 1.16 handles, as a floor: a newer TRL may add values, never silently lose these.
    assert {"grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"} <= set(read["loss_type"])
    assert {"group", "batch", "none", True, False} <= set(read["scale_rewards"])
    assert set(read["importance_sampling_level"]) >= {"token", "sequence"}
    assert set(read["vllm_mode"]) >= {"colocate", "server"}


def test_a_value_a_newer_trl_adds_is_read_from_its_code():
    newer = textwrap.dedent('''
        class GRPOTrainer:
            def _compute_loss(self):
                if self.loss_type == "cispo":
                    pass
                elif self.loss_type in ["grpo", "my_new_loss"]:
                    pass
                if args.vllm_mode != "server":
                    pass

        class GRPOConfig:
            def __post_init__(self):
                self.scale_rewards = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
    ''')
    read = values_in_source(newer, ("loss_type", "vllm_mode", "scale_rewards", "importance_sampling_level"))
    assert set(read["loss_type"]) == {"cispo", "grpo", "my_new_loss"}
    assert read["vllm_mode"] == ("server",) and set(read["scale_rewards"]) == {True, False}
    assert read["importance_sampling_level"] == ()


def test_values_trl_documents_count_too_but_not_another_fields():
    help_text = ("Supported values are 'grpo', `'dapo'` and 'my-loss'. 'luspo': requires "
                 "`importance_sampling_level='sequence'`.")
    assert values_in_help(help_text) == ("grpo", "dapo", "my-loss", "luspo")


@pytest.mark.parametrize("field", CHOICE_FIELDS)
def test_every_value_trl_handles_builds_a_config(field):
    for value in trl_choices()[field]:
        extra = {"importance_sampling_level": "sequence"} if value == "luspo" else {}
        config = RapidConfig(**{**BASE, field: value, **extra})
        assert getattr(config, field) == {True: "group", False: "none"}.get(value, value)


@pytest.mark.parametrize("field, typo", [("loss_type", "dapo2"), ("scale_rewards", "std"),
                                         ("importance_sampling_level", "tokens"), ("vllm_mode", "remote"),
                                         ("vllm_importance_sampling_mode", "mask")])
def test_a_value_trl_does_not_handle_gets_our_message(field, typo):
    with pytest.raises(ValueError) as error:
        RapidConfig(**{**BASE, field: typo})
    message = str(error.value)
    assert f"{field}={typo!r} must be one of" in message
    assert all(repr(v) in message for v in trl_choices()[field])
    assert f"installed TRL {trl.__version__}" in message
