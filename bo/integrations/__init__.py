"""Integrations with the tools users already run: Lightning (``lightning``), Optuna (``optuna``).

Each lives in its own module and imports its framework lazily, so ``import bo`` never needs them.
"""
