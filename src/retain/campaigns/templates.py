"""Message templates: Jinja2 in a sandbox, over one customer's fields.

A template sees ``customer`` (the customer's row: ``customer_id``, ``email``, ``name``,
``orders``, ``net_revenue``, ``first_order_at``, ``last_order_at``, ``segment``,
``churn_risk``, ``churn_reason``, ``p_alive``, ``clv``, ``next_purchase_date`` ...),
``campaign`` (its name), ``unsubscribe_url`` and ``recommendations`` (up to 3 products,
each with ``sku``, ``name`` and ``reason``: after an order, what goes with it; else what
the customer is likely to buy next; empty without order lines). The
sandbox keeps a template away from Python's internals (no ``__class__``, no calls of
unsafe methods), and a field the customer does not have is an error, not an empty text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from retain.errors import DataError


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["money"] = lambda value, digits=2: f"{float(value):,.{int(digits)}f}"
    return env


@lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    return _environment().from_string(source)


def compile_template(source: str) -> str | None:
    """None when ``source`` is a valid template, else what is wrong with it."""
    try:
        _compiled(source)
    except TemplateSyntaxError as exc:
        return f"{exc.message} (template line {exc.lineno})"
    return None


@lru_cache(maxsize=256)
def uses(source: str, name: str) -> bool:
    """Whether the template ``source`` reads the variable ``name``."""
    from jinja2 import meta

    return name in meta.find_undeclared_variables(_environment().parse(source))


def render(source: str, context: dict[str, Any], *, campaign: str, part: str) -> str:
    """``source`` rendered with ``context``; an unknown field or a failing expression
    raises :class:`DataError` naming the campaign and the part (subject, text, html)."""
    try:
        return str(_compiled(source).render(context))
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        customer = (context.get("customer") or {}).get("customer_id")
        whom = f" for customer {customer}" if customer is not None else ""
        raise DataError(
            f"campaign {campaign!r}: the {part} template cannot be rendered{whom} "
            f"({type(exc).__name__}: {exc})",
            expected="fields of the customer (retain campaigns preview shows them)",
        ) from None
