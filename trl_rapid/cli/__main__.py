"""`python -m trl_rapid.cli ...`: the training script (see trl_rapid/cli/__init__.py)."""

from . import main

if __name__ == "__main__":
    main()
