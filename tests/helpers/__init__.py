"""Helpers shared by several test modules and by the scripts they launch (tests/*_worker.py): import them as
`from helpers.<module> import ...` (tests/ is on sys.path in both)."""
