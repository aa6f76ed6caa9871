"""Experiments: one file each, a `get_config()` plus a thin `main`."""
