"""Integrations with the tools users already run: Lightning (``lightning``), Optuna (``optuna``),
Ray Tune (``ray_tune``).

Each lives in its own module, imported only on demand (``import bo`` never pulls one in); the
Optuna module needs the optional extra ``curvepfn[hpo]``, the Ray one ``curvepfn[ray]``.
"""
