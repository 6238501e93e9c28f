"""Integrations with the tools users already run: Lightning (``lightning``: freeze-thaw search;
``early_stopping``: the LC-PFN stop rule as a callback), Optuna (``optuna``), Ray Tune
(``ray_tune``).

Each lives in its own module, imported only on demand (``import bo`` never pulls one in); the
Optuna module needs the optional extra ``curvepfn[hpo]``, the Ray one ``curvepfn[ray]``.
"""
