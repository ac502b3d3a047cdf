"""`python -m trl_rapid --config configs/demo.yaml`: the training script, as the `trl-rapid` command."""

from .cli import main

if __name__ == "__main__":
    main()
