"""Campaigns: triggers, rules, outbox and delivery.

Read a campaign file (:func:`load_campaigns`), then run it (:func:`run_campaigns`): the
customers each trigger fires for, filtered by the audience, the opt-outs, the caps and
the quiet hours, each message written to the store's outbox before it is sent and sent
once at most. :func:`preview` renders one customer's message; :func:`campaign_report`
counts what each campaign did; :func:`suppress` records an opt-out; :func:`unsubscribe` the one a message's link
carries.
"""

from retain.campaigns.definitions import CHANNELS, TRIGGERS, example_path, load_campaigns
from retain.campaigns.outbox import (
    campaign_report,
    preview,
    run_campaigns,
    suppress,
    unsubscribe,
)

__all__ = [
    "CHANNELS",
    "TRIGGERS",
    "campaign_report",
    "example_path",
    "load_campaigns",
    "preview",
    "run_campaigns",
    "suppress",
    "unsubscribe",
]
