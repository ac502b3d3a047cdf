"""Runs the training script and stalls inside the checkpoint save of one step, so a test can `kill -9` it mid-write.

    python tests/checkpoint_kill_worker.py STALL_AT_STEP MARKER_FILE <training script arguments...>

At global step STALL_AT_STEP, `Trainer._save_rng_state` (called by both TRL's and RAPID's checkpoint save, after the
weights, optimizer and scheduler are written) opens its file, leaves it empty, touches MARKER_FILE and sleeps: the
test waits for the marker, then sends SIGKILL. Only this subprocess is slowed; the code under test is unchanged.
"""

import sys
import time
from pathlib import Path

import transformers

from trl_rapid.cli import main


def stall_inside_save(stall_at: int, marker: Path):
    save_rng_state = transformers.Trainer._save_rng_state

    def slow_save_rng_state(self, output_dir):
        if self.state.global_step == stall_at:
            Path(output_dir, "rng_state.pth").touch()  # opened, nothing written yet
            marker.write_text(output_dir)
            time.sleep(600)
        return save_rng_state(self, output_dir)

    transformers.Trainer._save_rng_state = slow_save_rng_state


if __name__ == "__main__":
    stall_inside_save(int(sys.argv[1]), Path(sys.argv[2]))
    main(sys.argv[3:])
