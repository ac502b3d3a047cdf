"""Adaptive H: when to stop reusing an inference batch (the paper's Open Question 3), as a small state machine.

RAPID samples N_inference = H_max × N_step completions with the behaviour policy µ and takes optimizer steps on
mini-batches of N_step of them. After each optimizer step k the trainer knows how far θ_k has drifted from µ on the
rows it just trained on: the effective sample size of their truncated weights, ESS/G (`estimator.group_ess`, averaged
over the step's groups on every process). The rule:

    after optimizer step k, if ESS_k/G < `threshold` and rows remain, the rows not trained on yet are stale:
    re-sample their prompts with the current policy, which becomes their µ, and go on with those fresh rows.

So H (optimizer steps per sampling call) shrinks when the policy moves fast and reaches H_max when it barely moves,
without touching the estimator: every row's µ is the policy that sampled it, so every step stays exact. The stale rows
that were dropped were sampled and never trained on: they are counted as waste. Each prompt of the inference batch is
still trained on once per outer step (refreshed rows are new samples of the same prompts), so the data order, the
number of optimizer steps and the checkpoint/resume logic are those of fixed H.

On a sample's first step θ = µ and every weight is 1, so a sample serves at least 2 optimizer steps (a re-sample too).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveH:
    """Decides, after each optimizer step, whether the rest of the inference batch is re-sampled.

    `max_h`: H_max, optimizer steps in one outer step. `threshold`: the smallest ESS/G at which the batch is still used.
    Counters, read by the trainer's logging: `h_history` (optimizer steps served by each sampling call, closed ones),
    `resamples`, `wasted_rows` (completions sampled and never trained on, this process).
    """

    max_h: int
    threshold: float
    steps_on_current_sample: int = 0
    resamples: int = 0
    wasted_rows: int = 0
    h_history: list[int] = field(default_factory=list)

    def after_optimizer_step(self, step_in_outer: int, ess: float, rows_per_step: int) -> bool:
        """Record optimizer step `step_in_outer` (0 … H_max − 1) whose rows had ESS/G `ess`; True: re-sample the rest.

        `ess` must be the same number on every process (reduced across processes), so all take the same decision.
        """
        self.steps_on_current_sample += 1
        steps_left = self.max_h - 1 - step_in_outer
        if steps_left == 0:  # end of the outer step: the next one samples anyway
            self._close_sample()
            return False
        # On a sample's first step θ = µ, so its ESS is 1 up to rounding (µ read off the sampler differs from the
        # trainer's forward by ~1e-7): it says nothing about drift, so it never triggers a re-sample.
        if self.steps_on_current_sample < 2 or ess >= self.threshold:
            return False
        self.resamples += 1
        self.wasted_rows += steps_left * rows_per_step
        self._close_sample()
        return True

    def _close_sample(self):
        self.h_history.append(self.steps_on_current_sample)
        self.steps_on_current_sample = 0
