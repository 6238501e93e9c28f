"""The PFN surrogate: a network that reads partial learning curves and predicts any of them.

The inference API (the contract other code relies on)::

    from pfn import Curve, Surrogate

    sur = Surrogate.load()  # the shipped checkpoint
    preds = sur.predict(context=[Curve([0.3], t=[0.1, 0.2], y=[0.4, 0.5])],
                        query=[Curve([0.3], t=[1.0])])
    preds[0].quantile(0.5)
"""

from pfn.surrogate import Curve, FinalPrediction, Prediction, RawRun, Surrogate

__all__ = ["Curve", "FinalPrediction", "Prediction", "RawRun", "Surrogate"]
