"""RAPID training script, TRL style. Run it with accelerate:

    accelerate launch scripts/rapid.py --config configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 scripts/rapid.py --config configs/demo.yaml   # 2 CPU processes

Every argument of RapidConfig / GRPOConfig, TRL's ModelConfig and the script (see trl_rapid/cli/) can be set in the
YAML file or on the command line.
"""

from trl_rapid.cli import main

if __name__ == "__main__":
    main()
