"""Cross-sell, upsell, bundles and personal recommendations, learned from order lines.

::

    from retain.recommend import build, Recommender, recommend_for_customer
    rec = build(store, save=True)              # learn the tables once, keep them in the store
    rec = Recommender.from_store(store)        # ... and load them at start, without recomputing
    rec.recommend_for_cart(["DESK-01"], k=5)   # real time: a few array lookups
    rec.also_bought("DESK-01"); rec.upsell("DESK-01"); rec.bundles()
    recommend_for_customer(store, "c42")       # personal, with replenishment of consumables
    association_rules(store, min_lift=2)       # pair and triple rules: support, confidence, lift
    evaluate(store)                            # hit rate@10 and coverage vs most popular

- :mod:`retain.recommend.rules`: :func:`association_rules`, :func:`bundles`.
- :mod:`retain.recommend.tables`: :func:`build`, :class:`Recommender` (the score
  is documented there), :func:`load_or_build`.
- :mod:`retain.recommend.personal`: :func:`recommend_for_customer`,
  :func:`recommend_for_customers`; :func:`load_histories` and
  :func:`recommend_from_history` rank one customer on demand (the service).
- :mod:`retain.recommend.evaluate`: :func:`evaluate`.
"""

from retain.recommend.baskets import Baskets, load_baskets, name_stem
from retain.recommend.evaluate import evaluate
from retain.recommend.personal import (
    PERSONAL_COLUMNS,
    CustomerHistories,
    load_histories,
    recommend_for_customer,
    recommend_for_customers,
    recommend_from_history,
)
from retain.recommend.rules import BUNDLE_COLUMNS, RULE_COLUMNS, association_rules, bundles
from retain.recommend.tables import (
    BuildOptions,
    Recommender,
    build,
    build_from_baskets,
    load_or_build,
)

__all__ = [
    "BUNDLE_COLUMNS",
    "PERSONAL_COLUMNS",
    "RULE_COLUMNS",
    "Baskets",
    "BuildOptions",
    "CustomerHistories",
    "Recommender",
    "association_rules",
    "build",
    "build_from_baskets",
    "bundles",
    "evaluate",
    "load_baskets",
    "load_histories",
    "load_or_build",
    "name_stem",
    "recommend_for_customer",
    "recommend_for_customers",
    "recommend_from_history",
]
