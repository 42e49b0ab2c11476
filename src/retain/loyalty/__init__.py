"""Loyalty: a points ledger, VIP tiers and referral rewards (``retain loyalty ...``)."""

from retain.loyalty.build import BuildReport, build
from retain.loyalty.ledger import Balance, KeyReused, NotEnoughPoints, balance, write_entry
from retain.loyalty.rules import DEFAULT_RULES_PATH, LoyaltyRules, Tier, load_rules

__all__ = [
    "DEFAULT_RULES_PATH",
    "Balance",
    "BuildReport",
    "KeyReused",
    "LoyaltyRules",
    "NotEnoughPoints",
    "Tier",
    "balance",
    "build",
    "load_rules",
    "write_entry",
]
