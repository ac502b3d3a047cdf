"""`python -m trl_rapid.benchmark --config ... --output_dir ...`"""

from .cli import main

if __name__ == "__main__":
    main()
