from .train import *  # noqa: F401,F403  (the script moved here; split next)
from .train import main, parse_args, run  # noqa: F401
