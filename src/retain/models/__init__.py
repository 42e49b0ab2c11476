"""Probabilistic models of customers: who is still a customer, how much they will
buy, and when.

- :class:`BetaGeo`: BG/NBD (Fader, Hardie & Lee 2005); r, alpha, a, b.
- :class:`ModifiedBetaGeo`: MBG/NBD (Batislam et al. 2007); r, alpha, a, b.
- :class:`ParetoNBD`: Pareto/NBD (Schmittlein et al. 1987); r, alpha, s, beta.
- :class:`GammaGamma`: value per purchase (Fader & Hardie 2013); p, q, gamma.
- :class:`BetaGeoBetaBinom`: BG/BB, discrete opportunities (Fader, Hardie & Shang
  2010); alpha, beta, gamma, delta.
- :class:`ShiftedBetaGeometric`: sBG, contract renewals (Fader & Hardie 2007);
  alpha, beta.
- :class:`BetaDiscreteWeibull`: BdW, contract renewals with duration dependence
  (Fader, Hardie, Liu, Davin & Steenburgh 2018); alpha, beta, c (1: the sBG).

Every model: ``Model(penalizer=0.0).fit(data)``, then ``params_``,
``log_likelihood_``, ``standard_errors_``, ``converged_``, ``summary()``,
``to_json()`` and ``Model.from_json(text)``. The first three (repeat-purchase
models, :class:`TransactionModel`) predict per customer: ``p_alive``,
``expected_purchases``, ``probability_of_purchases``, ``clv`` (with a fitted
:class:`GammaGamma`), ``next_purchase``, ``purchase_window`` and ``score`` (all
at once). Durations are numbers in the data's time unit or strings such as
"90D", "13W", "6M", "1Y"; discount rates are per year.
"""

from retain.errors import ArgumentError
from retain.models.base import ConvergenceWarning, Model, TransactionModel
from retain.models.bdw import BetaDiscreteWeibull
from retain.models.bgbb import BetaGeoBetaBinom
from retain.models.bgnbd import BetaGeo
from retain.models.gammagamma import GammaGamma
from retain.models.mbgnbd import ModifiedBetaGeo
from retain.models.pnbd import ParetoNBD
from retain.models.sbg import ShiftedBetaGeometric

#: the repeat-purchase models by short name (``retain fit --model``)
TRANSACTION_MODELS: dict[str, type[TransactionModel]] = {
    "bgnbd": BetaGeo,
    "mbgnbd": ModifiedBetaGeo,
    "pnbd": ParetoNBD,
}


def transaction_model(model: str | type[TransactionModel] | TransactionModel) -> TransactionModel:
    """An unfitted repeat-purchase model from a short name ("bgnbd", "mbgnbd", "pnbd"),
    a class, or an instance (returned as is)."""
    if isinstance(model, TransactionModel):
        return model
    if isinstance(model, type) and issubclass(model, TransactionModel):
        return model()
    if isinstance(model, str) and model in TRANSACTION_MODELS:
        return TRANSACTION_MODELS[model]()
    raise ArgumentError(f"unknown model {model!r}: choose one of {', '.join(TRANSACTION_MODELS)}")


__all__ = [
    "TRANSACTION_MODELS",
    "BetaDiscreteWeibull",
    "BetaGeo",
    "BetaGeoBetaBinom",
    "ConvergenceWarning",
    "GammaGamma",
    "Model",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "ShiftedBetaGeometric",
    "TransactionModel",
    "transaction_model",
]
