"""The learned model as a challenger to the chosen BTYD model: kept only when it wins.

``retain fit --learned`` calls :func:`challenge` after the holdout comparison has
chosen a repeat-purchase model. On the same holdout (the same calibration end, the
same customers: those who bought by it) the learned model
(:class:`retain.models.learned.LearnedModel`), trained on the calibration period
alone with the chosen model as its base, and the chosen model fitted on the
calibration summary each give every customer a probability of buying again within
the holdout. They are judged by the log-likelihood of what each customer did (a
proper score: the log of the probability given to buying or not buying), the mean
per-customer difference with a 90% paired bootstrap interval, as the BTYD models are
compared (:func:`retain.validate.choose_model`). The learned model is kept only when
the interval lies above 0; it is then trained again on every order up to the fit's
observation end, for the 30, 90 and 365 days after it, and ``retain score`` adds its
predictions and reasons. Otherwise the BTYD model stays and the verdict says why.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retain.models import TRANSACTION_MODELS
from retain.store import Store
from retain.validate import HoldoutData, _bootstrap_means

#: the horizons, in days, of a kept learned model's predictions in ``customer_scores``
HORIZONS = (30, 90, 365)
LEVEL = 0.9
RESAMPLES = 1000


def _log_likelihood(p: NDArray[np.float64], bought: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per customer: log P(what they did), bought or not, probabilities kept off 0 and 1
    as the log-loss keeps them (their mean is minus :func:`retain.accuracy.log_loss`)."""
    from retain.accuracy import EPSILON

    q = np.clip(p, EPSILON, 1.0 - EPSILON)
    return np.asarray(bought * np.log(q) + (1.0 - bought) * np.log1p(-q), dtype=np.float64)


def _scores(p: NDArray[np.float64], bought: NDArray[np.float64]) -> dict[str, float | None]:
    from retain.accuracy import buy_scores, outcomes

    scores = buy_scores(outcomes(p, bought))
    del scores["calibration"]
    return {**scores, "predicted_buyers": float(p.sum())}


def challenge(
    store: Store,
    held: HoldoutData,
    chosen: str,
    end: dt.date,
    *,
    seed: int = 0,
) -> tuple[Any | None, dict[str, Any]]:
    """Judge the learned model against ``chosen`` on ``held`` (the holdout of
    ``retain fit``); ``end`` is the fit's observation day. Returns the learned model
    trained to ``end`` when it is kept (else None) and the verdict, JSON-ready:
    ``kept``, ``reason``, ``criterion``, ``holdout_days``, ``customers``, ``buyers``,
    ``learned`` and ``btyd`` (their AUC, log-loss, Brier, ECE and predicted buyers),
    ``difference`` (mean per-customer log-likelihood, learned - BTYD) with
    ``difference_low`` / ``difference_high``, and ``card`` (what the learned model was
    trained on). A learned model that cannot be trained (too little history, no
    LightGBM) is not kept; the verdict names the reason."""
    from retain.errors import RetainError
    from retain.models.learned import LearnedModel

    days = held.days
    summary = held.summary
    bought = (held.actual.to_numpy() > 0).astype(np.float64)
    verdict: dict[str, Any] = {
        "kept": False,
        "criterion": "holdout log-likelihood of each customer buying again or not",
        "base": chosen,
        "holdout_days": days,
        "calibration_end": held.calibration_end.date().isoformat(),
        "customers": int(bought.size),
        "buyers": int(bought.sum()),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same fit compare_data made, warned of there
        base = TRANSACTION_MODELS[chosen]().fit(summary)
    p_btyd = 1.0 - base.probability_of_purchases(summary, 0, f"{days}D").to_numpy()
    verdict["btyd"] = _scores(p_btyd, bought)
    try:
        with warnings.catch_warnings():
            # the base model refitted at every training cut-off: its convergence notes
            # are the learned model's business, not the fit's
            warnings.simplefilter("ignore")
            trial = LearnedModel(horizons=(days,), base=chosen, seed=seed).fit(
                store, held.calibration_end
            )
            predicted = trial.predict(store, held.calibration_end)
    except (RetainError, ImportError) as exc:
        verdict["reason"] = f"the learned model could not be trained on the calibration: {exc}"
        return None, verdict
    p_learned = (
        predicted[f"p_buy_{days}d"]
        .reindex(summary.index)
        .to_numpy(dtype=np.float64, na_value=np.nan)
    )
    if np.isnan(p_learned).any():
        verdict["reason"] = "the learned model left some calibration customers without a forecast"
        return None, verdict
    verdict["learned"] = _scores(p_learned, bought)
    verdict["card"] = trial.card()
    difference = _log_likelihood(p_learned, bought) - _log_likelihood(p_btyd, bought)
    means = _bootstrap_means(difference[:, None], RESAMPLES, np.random.default_rng(seed))[:, 0]
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    mean = float(difference.mean())
    verdict.update(difference=mean, difference_low=float(low), difference_high=float(high))
    figures = (
        f"log-loss {verdict['learned']['log_loss']:.4f} against {verdict['btyd']['log_loss']:.4f} "
        f"for {chosen}, AUC {_fmt(verdict['learned']['auc'])} against "
        f"{_fmt(verdict['btyd']['auc'])} (per-customer difference {mean:.4g}, "
        f"{LEVEL:.0%} interval {low:.4g} to {high:.4g})"
    )
    if low <= 0:
        better = "not clearly better" if mean > 0 else "worse"
        verdict["reason"] = (
            f"the learned model is {better} than {chosen} on the {days}-day holdout: {figures}; "
            f"{chosen} stays"
        )
        return None, verdict
    verdict["kept"] = True
    verdict["reason"] = (
        f"the learned model beats {chosen} on the {days}-day holdout: {figures}; it is kept "
        f"and trained again on every order to {end}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final = LearnedModel(horizons=HORIZONS, base=chosen, seed=seed).fit(store, end)
    verdict["card"] = final.card()
    return final, verdict


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


#: ``learned_scores``: a kept learned model's predictions as of the last ``retain score``
LEARNED_SCORES_DDL = f"""
CREATE OR REPLACE TABLE learned_scores (
    customer_id VARCHAR NOT NULL, as_of DATE NOT NULL, fit_id INTEGER NOT NULL,
    {", ".join(f"p_buy_{h}d DOUBLE" for h in HORIZONS)},
    {", ".join(f"expected_purchases_{h}d DOUBLE" for h in HORIZONS)},
    {", ".join(f"expected_revenue_{h}d DOUBLE" for h in HORIZONS)},
    reasons VARCHAR)
"""
#: the horizon whose buy model the reasons explain, and how many customers get reasons:
#: those most worth winning back (tree contributions cost about half a millisecond each)
REASON_HORIZON = 90
REASON_CUSTOMERS = 5_000

# The customers at risk most worth winning back, as the win-back list ranks them
AT_RISK_SQL = """
SELECT customer_id FROM customer_scores
WHERE churn_risk IN ('medium', 'high', 'lost') AND value_at_stake > 0
ORDER BY value_at_stake DESC, customer_id
LIMIT $limit
"""


def score_learned(store: Store, learned: str, fit_id: int, end: dt.date) -> dict[str, int]:
    """Replace ``learned_scores`` with the predictions of the learned model ``learned``
    (its JSON in ``model_fits.learned``) for every customer as of ``end``, and, for the
    :data:`REASON_CUSTOMERS` customers at risk with the most value at stake in
    ``customer_scores`` (by the learned model's chance of buying within
    :data:`REASON_HORIZON` days when the scores have no risk columns), up to three
    features that lowered that chance most below the base model's, in words
    (``reasons``, joined by "; "; NULL when none did).
    Returns ``customers`` (the rows written) and ``reasons`` (the rows with reasons)."""
    from retain.models.learned import LearnedModel

    model = LearnedModel.from_json(learned)
    predicted = model.predict(store, end)
    found = store.con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer_scores'"
    ).fetchall()
    if {"churn_risk", "value_at_stake"} <= {str(r[0]) for r in found}:
        ranked = store.con.execute(AT_RISK_SQL, {"limit": REASON_CUSTOMERS}).fetchall()
        chosen = [str(r[0]) for r in ranked if str(r[0]) in predicted.index]
    else:
        p = predicted[f"p_buy_{REASON_HORIZON}d"]
        chosen = list(p[p < 0.5].sort_values(kind="stable").index[:REASON_CUSTOMERS])
    explained = (
        model.explain(store, end, chosen, top=len(model.features_), horizon=REASON_HORIZON)
        if chosen
        else {}
    )
    # the boosters correct the base model's log-odds: a contribution says how a feature
    # moved this customer's chance away from the base model's, so only those that raise
    # the risk (lower the chance) are reasons for it; the base model's own reading of
    # recency and frequency is the churn reason of customer_scores, and its outputs
    # (features of the boosters too) are not reasons of their own
    reasons = {
        c: "; ".join(
            [
                item["text"].removesuffix(" (raises risk)")
                for item in items
                if item["contribution"] < 0 and not item["feature"].startswith("btyd_")
            ][:3]
        )
        for c, items in explained.items()
    }
    frame = predicted.reset_index()
    frame.insert(1, "as_of", end)
    frame.insert(2, "fit_id", fit_id)
    frame["reasons"] = frame["customer_id"].map(lambda c: reasons.get(c) or None)
    with store.transaction() as con:
        con.execute(LEARNED_SCORES_DDL)
        con.register("learned_frame", frame)
        try:
            con.execute("INSERT INTO learned_scores BY NAME SELECT * FROM learned_frame")
        finally:
            con.unregister("learned_frame")
    return {"customers": len(frame), "reasons": int(frame["reasons"].notna().sum())}
