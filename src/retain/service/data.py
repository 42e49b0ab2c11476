"""What each page and its API twin show: one function per page, returning plain JSON.

Every function here takes a :class:`~retain.store.Store` and returns a dict of
JSON types (str, int, float, bool, None, lists and dicts). The ``/api`` route
returns it as it is; the dashboard page renders its template from the very
same dict, and the report embeds it: the three cannot disagree.

The numbers come from the libraries (:mod:`retain.metrics`,
:mod:`retain.segments`, :mod:`retain.models`, :mod:`retain.recommend`); this
module only picks, arranges and labels them. Pages read what the store holds
and never fit a model: where the store has no model scores yet, the payload
says so in ``notes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import pyarrow as pa

from retain.errors import DataError
from retain.row_numbers import RowNumbers
from retain.store import Store

if TYPE_CHECKING:
    from retain.metrics._activity import Activity

NO_SCORES = (
    "no model scores in the store yet: run `retain fit` and then `retain score` "
    "to see predicted CLV, P(alive) and next purchase dates"
)
NO_FITS = "no fitted model in the store yet: run `retain fit` (then `retain score`)"

CUSTOMER_SORTS = (
    "value_at_stake",
    "clv",
    "net_revenue",
    "orders",
    "p_alive",
    "last_order",
    "first_order",
    "customer_id",
)
"""Orders of the customer list; the largest (or latest) first, except customer_id."""


# -- JSON helpers ------------------------------------------------------------------------
def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as a list of dicts of plain JSON values (NaN -> None, dates ISO)."""
    if frame.empty:
        return []
    rows: list[dict[str, Any]] = json.loads(
        frame.to_json(orient="records", date_format="iso", date_unit="s")
    )
    return rows


def plain(value: Any) -> Any:
    """One value as a plain JSON type: numpy scalars unwrapped, NaN and NaT as None,
    dates (and midnight timestamps) as YYYY-MM-DD, other timestamps in ISO format."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:  # already plain: most values of a lookup
        return value
    if kind is float:
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp | np.datetime64):
        stamp = pd.Timestamp(value)
        if pd.isna(stamp):
            return None
        # a DATE column read through pandas is a midnight timestamp: the same text as a
        # date read directly, whichever path a value took
        if stamp.tzinfo is None and stamp == stamp.normalize():
            return stamp.date().isoformat()
        return stamp.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def table_columns(store: Store, table: str) -> list[str]:
    """Columns of ``table`` in the store, or [] when it does not exist."""
    rows = store.con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


# -- overview ------------------------------------------------------------------------------
MARGIN_SOURCES = {
    "asked": "",
    "setting": " (the store's margin setting)",
    "scored": " (the margin of the last `retain score`)",
    "none": " (no margin set: revenue, not profit)",
}


def margin_info(store: Store, margin: float | None) -> dict[str, Any]:
    """Which margin each CLV on the overview is at, and a sentence that says so.

    The model's CLV columns in ``customer_scores`` already include the margin of the
    last ``retain score``: they are shown as stored, never multiplied again, so that
    the overview, the customer page, the API and the CLI show the same numbers.
    Historical CLV (net revenue to date x margin) uses ``margin`` when given, else
    the store's margin setting, else the scored margin, else 1 (revenue, not
    profit): :func:`retain.config.resolve_margin`, as every command.

    Keys: ``historical`` (the margin of historical CLV), ``predicted`` (the scored
    margin, None without scores), ``source`` (``asked``, ``setting``, ``scored`` or
    ``none``), ``text``.
    """
    from retain.config import margin_and_source, scored_margin

    scored = scored_margin(store)
    historical, source = margin_and_source(store, margin)
    if scored is None or historical == scored:
        text = f"CLV at margin {historical:g}{MARGIN_SOURCES[source]}."
    else:
        text = (
            f"Predicted CLV at margin {scored:g} (the margin of the last `retain score`); "
            f"historical CLV at margin {historical:g}{MARGIN_SOURCES[source]}."
        )
    return {"historical": historical, "predicted": scored, "source": source, "text": text}


def metrics_payload(
    store: Store,
    *,
    period: str = "month",
    margin: float | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """The overview page: headline metrics, CLV distribution, new vs returning revenue, alerts.

    ``period``: month, quarter or year; ``margin``: fraction of net revenue
    kept, in (0, 1], for historical CLV (default: the store's margin
    setting, else the margin the store was scored with, else 1; predicted CLV is shown as scored, see
    :func:`margin_info`); ``window_days``: a customer is someone who ordered
    in the last ``window_days`` days (default: from the store's purchase
    rhythm, as on the Models page; see :mod:`retain.metrics.retention`). Keys: ``overview`` (see
    :func:`retain.metrics.overview`), ``margin`` (see :func:`margin_info`),
    ``predicted`` (average, median and total predicted CLV from the model
    scores, or None), ``clv_distribution`` (histogram bins),
    ``models_window_days`` (the activity window of the Models page's churn: the
    same churn as the overview's when the overview is monthly with that window),
    ``alerts`` (see :func:`alerts_payload`), ``settings`` (the store's settings:
    :func:`settings_table`), ``notes``.
    """
    from retain.metrics._activity import activity
    from retain.metrics._common import activity_window, observation
    from retain.metrics.overview import overview_over

    store.require_orders()
    margins = margin_info(store, margin)
    # the overview and the alerts read the same pass over the orders: it is made once
    window = observation(store, None, period)
    chosen = activity_window(store, window, window_days)
    act = activity(store, window, chosen)
    result: dict[str, Any] = {
        "overview": plain(overview_over(store, act, margins["historical"])),
        "margin": margins,
    }
    notes: list[str] = []
    clv_column = predicted_clv_column(store)
    if clv_column is None:
        result["predicted"] = None
        notes.append(NO_SCORES)
    else:
        # already x the scored margin: as stored, as on the customer page
        row = store.con.execute(
            f"SELECT avg({clv_column}), median({clv_column}), sum({clv_column}), count(*) "
            "FROM customer_scores"
        ).fetchall()[0]
        result["predicted"] = {
            "column": clv_column,
            "margin": margins["predicted"],
            "average_clv": plain(row[0]),
            "median_clv": plain(row[1]),
            "total_clv": plain(row[2]),
            "customers": int(row[3]),
        }
    result["clv_distribution"] = clv_distribution(store, clv_column, margins["historical"])
    # the Models page's window: the store's default for months, the overview's own then
    monthly_default = period == "month" and window_days is None
    result["models_window_days"] = chosen.days if monthly_default else models_window_days(store)
    result["alerts"] = alerts_payload(store, period=period, window_days=window_days, act=act)
    result["settings"] = settings_table(store)
    result["notes"] = notes
    return result


def settings_table(store: Store) -> list[dict[str, Any]]:
    """The store's settings, one row each (:func:`retain.config.settings_table`): what
    every page and command defaults to."""
    from retain.config import settings_table as rows

    return plain(rows(store))


def models_window_days(store: Store) -> int:
    """The activity window of the Models page's monthly churn: the store's default (see
    :func:`retain.metrics._common.activity_window`)."""
    from retain.metrics._common import activity_window, observation

    return activity_window(store, observation(store, None, "month"), None).days


def predicted_clv_column(store: Store) -> str | None:
    """The model's per-customer CLV column in ``customer_scores``, or None."""
    columns = table_columns(store, "customer_scores")
    for name in ("clv", "clv_12m", "predicted_clv"):
        if name in columns:
            return name
    return None


def clv_distribution(
    store: Store, clv_column: str | None, margin: float = 1.0, bins: int = 20
) -> dict[str, Any]:
    """Histogram of CLV per customer: predicted (model scores, as stored: they include the
    margin they were scored with) when the store has them, else historical (net revenue to
    date x ``margin``). The last bin gathers everyone above the 99th percentile so that a
    few whales do not flatten the chart."""
    if clv_column is not None:
        basis = f"predicted CLV ({clv_column})"
        source = f"SELECT {clv_column} AS clv FROM customer_scores WHERE {clv_column} IS NOT NULL"
        params: dict[str, Any] = {}
    else:
        basis = "historical CLV (net revenue to date x margin)"
        source = "SELECT sum(net_revenue) * $margin AS clv FROM orders GROUP BY customer_id"
        params = {"margin": margin}
    row = store.con.execute(
        f"SELECT min(clv), quantile_cont(clv, 0.99), max(clv), count(*) FROM ({source})",
        params,
    ).fetchall()[0]
    low, p99, high, n = row
    if not n:
        return {"basis": basis, "bins": [], "customers": 0}
    low = min(float(low), 0.0)
    top = float(p99) if p99 is not None and p99 > low else float(high)
    width = (top - low) / bins if top > low else 1.0
    counts = store.con.execute(
        f"""
        SELECT least(greatest(floor((clv - $low) / $width), 0), $last)::INTEGER AS bin,
               count(*) AS customers, sum(clv) AS clv
        FROM ({source}) GROUP BY bin ORDER BY bin
        """,
        {**params, "low": low, "width": width, "last": bins - 1},
    ).fetchall()
    per_bin = {int(b): (int(c), float(v)) for b, c, v in counts}
    return {
        "basis": basis,
        "customers": int(n),
        "bins": [
            {
                "low": low + i * width,
                "high": (low + (i + 1) * width) if i < bins - 1 else float(high),
                "customers": per_bin.get(i, (0, 0.0))[0],
                "clv": per_bin.get(i, (0, 0.0))[1],
                "open_ended": i == bins - 1 and float(high) > top,
            }
            for i in range(bins)
        ],
    }


def alerts_payload(
    store: Store,
    *,
    period: str = "month",
    window_days: int | None = None,
    act: Activity | None = None,
) -> dict[str, Any]:
    """Recent drops in retention, AOV, frequency, new customers or repeat revenue share,
    and the drift of the latest backtest's forecasts.

    Keys: ``alerts`` (rows of :func:`retain.metrics.alerts`, most significant
    first, then the drift alerts), ``checked``, ``note``, ``drift`` (what the drift
    check read: :func:`retain.metrics.alerts.drift_alerts`) and the test's settings.
    ``act``: the activity aggregates of this period and window when already computed
    (the overview's).
    """
    from retain.metrics import alerts
    from retain.metrics.alerts import alerts_over

    store.require_orders()
    if act is None:
        frame = alerts(store, period, window_days=window_days)
    else:  # the overview's pass over the orders, for this period and window
        frame = alerts_over(store, act)
    return {"alerts": records(frame), **plain(dict(frame.attrs))}


# -- cohorts -------------------------------------------------------------------------------
def cohorts_payload(
    store: Store, *, period: str = "month", margin: float | None = None
) -> dict[str, Any]:
    """The cohorts page: retention heatmap and cohort CLV curves.

    Keys: ``period``, ``as_of``, ``margin``; ``cohorts`` (labels, first-order
    period), ``sizes`` (customers per cohort), ``ages`` (0, 1, ... periods
    since the first order); ``active_share`` and ``cumulative_clv``: one list
    per cohort, one value per age (None past the observation day; the
    current, incomplete period is included and flagged in ``complete``);
    ``rows``: the long table of :func:`retain.metrics.cohorts`.
    """
    from retain.metrics import cohort_matrix, cohorts

    store.require_orders()
    frame = cohorts(store, period, margin=margin)
    shares = cohort_matrix(frame, "active_share")
    clv = cohort_matrix(frame, "cumulative_clv")
    complete = frame.pivot(index="cohort", columns="age", values="complete")
    ages = [c for c in shares.columns if c != "customers"]

    def grid(matrix: pd.DataFrame) -> list[list[float | None]]:
        values = matrix[ages].to_numpy(dtype="float64")
        return [[plain(v) for v in row] for row in values]

    return {
        "period": frame.attrs["period"],
        "as_of": frame.attrs["as_of"],
        "margin": frame.attrs["margin"],
        "cohorts": [str(c) for c in shares.index],
        "sizes": [int(v) for v in shares["customers"]],
        "ages": [int(a) for a in ages],
        "active_share": grid(shares),
        "cumulative_clv": grid(clv),
        "complete": [[bool(v) if v == v else None for v in row] for row in complete.to_numpy()],
        "rows": records(frame),
    }


# -- segments ------------------------------------------------------------------------------
def segments_payload(store: Store, index: CustomerIndex | None = None) -> dict[str, Any]:
    """The segments page: one row per RFM segment with its action, and the R x F grid.

    Keys: ``segments`` (rows of :func:`retain.segments.segment_summary`, best
    segment first; ``share_of_customers`` and ``share_of_revenue`` in percent, as every
    rate and share of the API), ``grid`` (customers and net revenue per recency score x
    frequency score, with the most common segment of each cell), ``as_of``,
    ``scheme``, ``model``, ``notes``.
    """
    from retain.segments import segment_summary

    store.require_orders()
    summary = segment_summary(store)
    frame = (index or build_customer_index(store)).frame
    cells = (
        frame.groupby(["r_score", "f_score"], observed=True)
        .agg(customers=("orders", "size"), net_revenue=("net_revenue", "sum"))
        .reset_index()
    )
    # the most common segment among the texts themselves: a categorical's counts would
    # break ties by the order of its categories instead
    texts = frame[["r_score", "f_score"]].assign(segment=_as_text(frame["segment"]))
    common = (
        texts.groupby(["r_score", "f_score"], observed=True)["segment"]
        .agg(lambda s: s.value_counts().index[0])
        .reset_index()
    )
    cells = cells.merge(common, on=["r_score", "f_score"])
    notes = [] if summary.attrs.get("model") != "none" else [NO_SCORES]
    shown = summary.assign(  # the API's one convention: rates and shares in percent
        share_of_customers=100 * summary["share_of_customers"],
        share_of_revenue=100 * summary["share_of_revenue"],
    )
    return {
        "segments": records(shown),
        "grid": records(cells),
        "levels": int(max(frame["r_score"].max(), frame["f_score"].max())) if len(frame) else 0,
        **plain({k: summary.attrs[k] for k in ("as_of", "scheme", "model")}),
        "notes": notes,
    }


# -- at risk -------------------------------------------------------------------------------
def at_risk_payload(
    store: Store,
    index: CustomerIndex | None = None,
    *,
    min_risk: str = "high",
    limit: int = 100,
) -> dict[str, Any]:
    """The at-risk page: the win-back list, most value at stake first.

    Keys: ``customers`` (rows of :func:`retain.segments.winback_list`, up to
    ``limit``), ``min_risk``, ``total`` (customers on the whole win-back list: at that
    risk or worse and worth winning back), ``value_at_stake`` (their total, reporting
    currency; None without model scores), ``by_risk`` (every customer by risk level),
    ``as_of``, ``model``, ``export`` (the CSV audience URL), ``notes``.
    """
    from retain.segments import RISK_LEVELS, winback_list

    store.require_orders()
    if min_risk not in RISK_LEVELS:
        raise DataError("unknown risk level", value=min_risk, expected=" or ".join(RISK_LEVELS))
    if limit < 1 or limit > 10_000:
        raise DataError("limit out of range", value=limit, expected="1 to 10000")
    frame = winback_list(store, min_risk=min_risk, limit=limit)
    frame["top_products"] = pd.Series([list(p) for p in frame["top_products"]], index=frame.index)
    everyone = (index or build_customer_index(store)).frame
    # the list's own count and sum before the limit: the same list as the CLI's
    stake = frame.attrs.get("value_at_stake")
    return {
        "customers": records(frame),
        "min_risk": min_risk,
        "total": int(frame.attrs.get("total", len(frame))),
        "value_at_stake": plain(stake) if frame.attrs.get("model") != "none" else None,
        "by_risk": {level: int((everyone["churn_risk"] == level).sum()) for level in RISK_LEVELS},
        **plain({k: frame.attrs.get(k) for k in ("as_of", "model")}),
        "export": "/api/audiences/win-back.csv",
        "notes": [] if frame.attrs.get("model") != "none" else [NO_SCORES],
    }


# -- customers -----------------------------------------------------------------------------
@dataclass
class CustomerIndex:
    """Every customer's segment, risk, order summary, model scores and contact, in memory.

    Built from :func:`retain.segments.customer_segments`, the ``customer_scores``
    table and the ``customers`` table, so that a lookup costs a few microseconds
    rather than a pass over the orders: ``positions`` gives each customer's row of
    ``frame`` (:class:`~retain.row_numbers.RowNumbers`). ``fresh`` holds the rows of customers rescored
    after an order since it was built (:func:`rescore_customers`), new customers
    included: a lookup reads them first; :func:`fold_fresh` moves them into ``frame``,
    which the lists, sorts and counts read.
    """

    frame: pd.DataFrame
    positions: Mapping[str, int]
    as_of: str | None
    model: str
    score_columns: list[str] = field(default_factory=list)
    fresh: dict[str, pd.Series] = field(default_factory=dict)
    # the frame's columns as arrays, made on the first lookup (a new frame, a new index)
    _columns: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def row(self, position: int) -> dict[str, Any]:
        """The values of ``frame.iloc[position]`` by column as plain JSON values (those of
        :func:`plain`), without building a Series (a lookup's largest cost): each column
        read by a reader made once for its type (:func:`_plain_reader`)."""
        columns = self._columns
        if columns is None:
            columns = {str(name): _plain_reader(values) for name, values in self.frame.items()}
            self._columns = columns
        return {name: read(position) for name, read in columns.items()}


_EPOCH = dt.datetime(1970, 1, 1)
_NAT_TICKS = np.iinfo(np.int64).min
_MICROSECONDS_A_DAY = 86_400_000_000


def _plain_reader(values: pd.Series) -> Callable[[int], Any]:
    """A function of a row number giving ``plain(values.iloc[row])``, for a column read
    once per lookup: NumPy numbers and microsecond times are converted from the array
    directly, Arrow text read from its Arrow array; other types go through :func:`plain`."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        # the row's code, then its category read as a column of its own is read: a list of
        # the categories as Python values would hold some 360,000 churn reasons (60 MB)
        codes = values.cat.codes.to_numpy()
        label = _plain_reader(pd.Series(dtype.categories, copy=False))

        def category(position: int) -> Any:
            code: int = codes.item(position)
            return None if code < 0 else label(code)

        return category
    if isinstance(dtype, np.dtype):
        array = values.to_numpy()
        if dtype.kind == "f":

            def number(position: int) -> float | None:
                value: float = array.item(position)
                return None if math.isnan(value) or math.isinf(value) else value

            return number
        if dtype.kind in "iub":
            item: Callable[[int], Any] = array.item
            return item
        if dtype == np.dtype("datetime64[us]"):
            ticks = array.view(np.int64)
            return lambda position: _plain_microseconds(ticks.item(position))
        return lambda position: plain(array[position])
    to_arrow = getattr(values.array, "__arrow_array__", None)
    if to_arrow is not None:
        text = to_arrow()
        if isinstance(text, pa.ChunkedArray) and text.num_chunks == 1:
            text = text.chunk(0)
        if isinstance(text, pa.Array) and (
            pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
        ):
            return lambda position: text[position].as_py()
    extension = values.array
    return lambda position: plain(extension[position])


def _plain_microseconds(ticks: int) -> str | None:
    """:func:`plain` of a time without time zone held as microseconds since 1970-01-01:
    a date when it is midnight, else the time in ISO format (None for NaT)."""
    if ticks == _NAT_TICKS:
        return None
    try:
        if ticks % _MICROSECONDS_A_DAY == 0:
            return (_EPOCH + dt.timedelta(microseconds=ticks)).date().isoformat()
        return (_EPOCH + dt.timedelta(microseconds=ticks)).isoformat()
    except OverflowError:  # beyond Python's years 1 to 9999
        return plain(np.datetime64(ticks, "us"))


CONTACT_COLUMNS = ("email", "name", "acquisition_channel", "accepts_marketing", "first_seen")

CATEGORY_COLUMNS = (
    "rfm",
    "segment",
    "action",
    "offer",
    "churn_risk",
    "churn_reason",
    "model",
    "acquisition_channel",
)
"""Text columns of the index held as pandas categoricals: each has few values (a segment's
action, a risk level; a churn reason some hundred thousand of a million), so the index
holds a small code per customer and each text once, not a million texts (at 1M customers
some 300 MB less)."""


def _as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text columns of :data:`CATEGORY_COLUMNS` as categoricals (the
    same values; missing ones stay missing)."""
    texts = {
        name: _categorical(frame[name])
        for name in CATEGORY_COLUMNS
        if name in frame
        and (frame[name].dtype == object or isinstance(frame[name].dtype, pd.StringDtype))
    }
    return frame.assign(**texts) if texts else frame


def _categorical(values: pd.Series) -> pd.Series:
    """A text column as a categorical of the same values, its categories in the order
    they first appear. Arrow text is encoded by Arrow, in half the time pandas takes
    (0.3 s for the churn reasons of 1M customers)."""
    if not isinstance(values.array, pd.arrays.ArrowExtensionArray):
        return values.astype("category")
    import pyarrow.compute as pc

    encoded = values.array.__arrow_array__().combine_chunks().dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy()  # -1: a missing value
    categories = pd.Index(pd.array(encoded.dictionary, dtype=values.dtype))
    found = pd.Categorical.from_codes(codes, categories=categories, validate=False)
    return pd.Series(found, index=values.index, name=values.name)


def _own_buffers(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ids and Arrow text columns copied into buffers of their own.

    Text read from DuckDB through Arrow shares DuckDB's buffers, and one column of a
    result batch keeps the whole batch in memory, every other column with it: at 1M
    customers the ids and two contact columns held some 350 MB of texts the index had
    already let go (a copy takes a few milliseconds a column)."""

    def owned(values: pd.Series | pd.Index) -> Any:
        if not isinstance(values.array, pd.arrays.ArrowExtensionArray):
            return values  # NumPy columns, categoricals and flags are pandas' own
        held = values.array.__arrow_array__()  # the Arrow data itself, not a copy
        copied = held.take(pa.array(np.arange(len(held), dtype=np.int64)))
        return pd.array(copied, dtype=values.dtype)

    texts = {str(name): owned(values) for name, values in frame.items()}
    moved = {name: values for name, values in texts.items() if values is not frame[name]}
    frame = frame.assign(**moved) if moved else frame
    frame.index = pd.Index(owned(frame.index), name=frame.index.name)
    return frame


def _as_text(values: pd.Series) -> pd.Series:
    """A categorical column as the text column it was made from (others as they are)."""
    return values.astype("str") if isinstance(values.dtype, pd.CategoricalDtype) else values


def index_positions(frame: pd.DataFrame) -> RowNumbers:
    """Each customer id of ``frame``'s index (as text) and its row number, as a dict of
    them would give, in a fifth of the memory (at 1M customers 25 MB, where the dict
    took 81). The ids are taken out as one list: iterating an Arrow-backed index one id
    at a time took 1.9 s at 1M customers."""
    return RowNumbers(frame.index.astype(str).tolist())


def build_customer_index(store: Store) -> CustomerIndex:
    """Build the :class:`CustomerIndex` of the store (one pass over orders and scores)."""
    from retain.segments import customer_segments

    store.require_orders()
    segments = customer_segments(store)
    as_of, model = segments.attrs.get("as_of"), str(segments.attrs.get("model"))
    # made compact before the scores are read, so that DuckDB's batches of the segments'
    # result go first (the same values: _index_frame makes them so in any case)
    segments = _own_buffers(_as_categories(segments))
    frame, score_columns = _index_frame(store, segments)
    positions = index_positions(frame)
    return CustomerIndex(frame, positions, as_of, model, score_columns)


def _index_frame(store: Store, segments: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The index's rows: ``segments`` (rows of :func:`retain.segments.customer_segments`)
    with the other columns of ``customer_scores`` and the contact columns of
    ``customers`` beside them, in the segments' order; also the score columns.

    The columns are matched to the segments' customers by DuckDB, which returns them in
    that order through Arrow: at 1M customers 0.6-1.0 s, where fetching the two tables with
    ``.df()`` and joining a million text ids in pandas took 2.4 s."""
    types = dict(
        store.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'customer_scores' ORDER BY ordinal_position"
        ).fetchall()
    )
    score_columns = [c for c in types if c != "customer_id" and c not in segments]
    held = table_columns(store, "customers")
    contact = [c for c in CONTACT_COLUMNS if c in held]

    def column(table: str, name: str) -> str:
        # a day is a time at midnight, as the scores' other times are (datetime64[us])
        value = f'{table}."{name}"'
        return f"CAST({value} AS TIMESTAMP)" if types.get(name) == "DATE" else value

    selected = [column("s", c) + f' AS "{c}"' for c in score_columns]
    selected += [f'c."{c}"' for c in contact]
    joins = " LEFT JOIN customer_scores s USING (customer_id)" if score_columns else ""
    joins += " LEFT JOIN customers c USING (customer_id)" if contact else ""
    ids = pa.table(
        {
            "customer_id": pa.array(segments.index.astype(str), type=pa.string()),
            "_pos": pa.array(np.arange(len(segments), dtype=np.int64)),
        }
    )
    con = store.con  # its own transaction's scores (a rescoring's, not yet committed)
    con.register("_index_ids", ids)
    try:
        table = con.sql(
            f"SELECT {', '.join(['i.customer_id', *selected])} FROM _index_ids i{joins} "
            "ORDER BY i._pos"
        ).to_arrow_table()
    finally:
        con.unregister("_index_ids")
    other = table.to_pandas().set_index("customer_id")
    for name in other.columns:  # a flag with gaps as pandas' own (.df()'s), not objects
        if pa.types.is_boolean(table.schema.field(name).type) and other[name].dtype == object:
            other[name] = other[name].astype("boolean")
    other.index = segments.index
    frame = pd.concat([_as_categories(segments), _as_categories(other)], axis=1)
    frame.index.name = "customer_id"
    frame = _own_buffers(frame)
    return frame, score_columns


def fold_fresh(index: CustomerIndex, fresh: dict[str, pd.Series] | None = None) -> CustomerIndex:
    """A new index whose ``frame`` holds the ``fresh`` rows (default: those of ``index``)
    in place of the customers' old rows, new customers at the end; its ``fresh`` is
    empty. ``index`` itself is not changed, so readers of it are not disturbed."""
    fresh = dict(index.fresh if fresh is None else fresh)
    if not fresh:
        return index
    old = index.frame
    rows = pd.DataFrame(list(fresh.values()), index=pd.Index(list(fresh), name="customer_id"))
    rows = rows.reindex(columns=old.columns)
    kept = old[~old.index.isin(rows.index)]
    categorical = []
    for column in old.columns:  # the index's own types, where the values fit them
        dtype = old[column].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            # a text new to the column (a new churn reason) becomes a category of it, where
            # casting to the old categories would make it missing
            new = pd.Index(rows[column].dropna().unique()).difference(dtype.categories)
            if len(new):
                kept[column] = kept[column].cat.add_categories(new)
                dtype = kept[column].dtype
            categorical.append(column)
        with contextlib.suppress(TypeError, ValueError):
            rows[column] = rows[column].astype(dtype)
    frame = pd.concat([kept, rows])
    for column in categorical:  # the texts no customer has any more go
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].cat.remove_unused_categories()
    frame.index.name = "customer_id"
    positions = index_positions(frame)
    return dataclasses.replace(index, frame=frame, positions=positions, fresh={})


def customers_payload(
    store: Store,
    index: CustomerIndex | None = None,
    *,
    segment: str | None = None,
    risk: str | None = None,
    q: str | None = None,
    sort: str = "value_at_stake",
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of customers, filtered by segment, churn risk or a search text.

    ``q`` matches anywhere in a customer id or e-mail (case-insensitive);
    ``sort`` is one of :data:`CUSTOMER_SORTS`. Keys: ``customers`` (rows),
    ``total`` (matches before paging), ``limit``, ``offset``, ``next`` and
    ``previous`` (query strings of the neighbouring pages or None), the
    filters as given, ``as_of``.
    """
    from retain.segments import RISK_LEVELS

    if sort not in CUSTOMER_SORTS:
        raise DataError("unknown sort", value=sort, expected=", ".join(CUSTOMER_SORTS))
    if not 1 <= limit <= 1000:
        raise DataError("limit out of range", value=limit, expected="1 to 1000")
    if offset < 0:
        raise DataError("offset cannot be negative", value=offset)
    index = index or build_customer_index(store)
    frame = index.frame
    keep = np.ones(len(frame), dtype=bool)
    if segment:
        known = set(frame["segment"].dropna().unique())
        from retain.segments import load_rules

        names = {s.lower(): s for s in load_rules().table()["segment"]}
        name = names.get(segment.strip().lower())
        if name is None:
            raise DataError("unknown segment", value=segment, expected=", ".join(names.values()))
        keep &= (frame["segment"] == name).to_numpy() if name in known else False
        segment = name
    if risk:
        if risk not in RISK_LEVELS:
            raise DataError("unknown risk level", value=risk, expected=" or ".join(RISK_LEVELS))
        keep &= (frame["churn_risk"] == risk).to_numpy()
    if q:
        text = q.strip().lower()
        ids = frame.index.astype(str).str.lower()
        # anywhere in the id or e-mail, as the service's search (which caches these columns)
        hit = ids.str.contains(text, regex=False)
        if "email" in frame:
            hit |= frame["email"].fillna("").str.lower().str.contains(text, regex=False).to_numpy()
        keep &= np.asarray(hit, dtype=bool)
    chosen = frame[keep]
    column = {
        "clv": predicted_clv_name(index),
        "last_order": "last_order_at",
        "first_order": "first_order_at",
    }.get(sort, sort)
    if column is None:
        column = "net_revenue"  # no model scores: the largest spenders first
    if sort == "customer_id":
        chosen = chosen.sort_index()
    else:
        chosen = chosen.sort_values(column, ascending=False, na_position="last", kind="stable")
    page = chosen.iloc[offset : offset + limit]
    rows = [customer_row(cid, page.iloc[i], index) for i, cid in enumerate(page.index)]
    total = len(chosen)

    def link(start: int) -> str:
        parts = {"segment": segment, "risk": risk, "q": q, "sort": sort, "limit": limit}
        return urlencode({**{k: v for k, v in parts.items() if v}, "offset": start})

    return {
        "customers": rows,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next": link(offset + limit) if offset + limit < total else None,
        "previous": link(max(offset - limit, 0)) if offset > 0 else None,
        "segment": segment,
        "risk": risk,
        "q": q,
        "sort": sort,
        "as_of": index.as_of,
    }


def predicted_clv_name(index: CustomerIndex) -> str | None:
    for name in ("clv", "clv_12m", "predicted_clv"):
        if name in index.frame:
            return name
    return None


def customer_row(customer_id: Any, row: pd.Series, index: CustomerIndex) -> dict[str, Any]:
    """The short form of a customer, for lists."""
    clv = predicted_clv_name(index)
    return {
        "customer_id": str(customer_id),
        "email": plain(row.get("email")),
        "name": plain(row.get("name")),
        "orders": plain(row["orders"]),
        "net_revenue": plain(row["net_revenue"]),
        "last_order_at": plain(row["last_order_at"]),
        "segment": plain(row["segment"]),
        "churn_risk": plain(row["churn_risk"]),
        "p_alive": plain(row.get("p_alive")),
        "clv": plain(row[clv]) if clv else None,
        "value_at_stake": plain(row["value_at_stake"]),
    }


def customer_payload(
    store: Store,
    customer_id: str,
    index: CustomerIndex | None = None,
    *,
    history: int = 0,
    recs: Recommendations | None = None,
    stale: bool = False,
    tier: Any = None,
) -> dict[str, Any] | None:
    """Everything known about one customer, or None when the store has no such customer.

    ``history``: how many of their latest orders to list (0: none). Keys:
    ``customer_id``, ``profile`` (contact and acquisition), ``orders`` (count,
    net revenue, AOV, first and last order, days since the last order, typical
    gap in days), ``scores`` (model scores, or None), ``rfm``, ``segment``
    (name, action, offer), ``churn`` (risk, reason, value at stake),
    ``recommendations``, ``history`` (when asked), ``as_of``, ``notes``.
    ``stale``: the customer has orders newer than ``index``; read them from the store.
    ``tier``: the loyalty tier they hold (its benefits reach the recommendations).
    """
    index = index or build_customer_index(store)
    rescored = index.fresh.get(customer_id)
    if rescored is not None and not stale:  # rescored after an order: as rescored
        result = _customer(store, customer_id, rescored, index, history, recs, tier)
        result["as_of"] = plain(rescored.get("as_of")) or index.as_of
        result["notes"].append(UPDATED_NOTE)
        return result
    position = index.positions.get(customer_id)
    if position is not None and not stale:
        return _customer(store, customer_id, index.row(position), index, history, recs, tier)
    # written since the index was built, or new: orders and scores straight from the store
    fresh = _fresh_row(store, customer_id, index)
    if fresh is None:
        return None
    result = _customer(store, customer_id, fresh, index, history, recs, tier)
    if fresh.attrs.get("segment_rescored"):
        result["as_of"] = plain(fresh.get("as_of")) or index.as_of
        result["notes"].append(UPDATED_NOTE)
    else:
        result["notes"].append(
            "segment and churn risk are being recomputed after a new order; "
            "orders and model scores are current"
        )
    return result


UPDATED_NOTE = (
    "updated after a new order: orders, model scores, segment and churn risk are "
    "current (RFM scores placed against the last full `retain score`)"
)


def _fresh_row(store: Store, customer_id: str, index: CustomerIndex) -> pd.Series | None:
    """The index row of one customer with their orders summary and ``customer_scores`` row
    (model scores, and the segment columns when scored with them) read now.

    ``attrs["segment_rescored"]`` says whether segment and churn risk came from the store
    (the customer was rescored after the order: see :func:`_rescored_segments`).
    """
    score_columns = [c for c in table_columns(store, "customer_scores") if c != "customer_id"]
    got: list[Any] = []
    if score_columns:
        got = store.con.execute(
            f"SELECT {', '.join(score_columns)} FROM customer_scores WHERE customer_id = ?",
            [customer_id],
        ).fetchall()
    scored = dict(zip(score_columns, got[0], strict=True)) if got else {}
    summary = store.con.execute(
        "SELECT count(*), sum(net_revenue), min(ordered_at), max(ordered_at) "
        "FROM orders WHERE customer_id = ?",
        [customer_id],
    ).fetchall()[0]
    if not summary[0]:
        return None
    position = index.positions.get(customer_id)
    if position is not None:
        row = index.frame.iloc[position].copy()
    else:
        row = pd.Series(np.nan, index=index.frame.columns, dtype="object")
    row["orders"], row["net_revenue"] = int(summary[0]), float(summary[1])
    row["first_order_at"], row["last_order_at"] = summary[2], summary[3]
    segmented = _rescored_segments(store, customer_id, scored)
    if segmented is not None:
        for name, value in segmented.items():
            row[str(name)] = value
    for name, value in scored.items():
        row[name] = value
    row.attrs["segment_rescored"] = segmented is not None
    # the contact details as stored now: the write may have changed them too
    contact = store.con.execute(
        "SELECT email, name, acquisition_channel, accepts_marketing, first_seen "
        "FROM customers WHERE customer_id = ?",
        [customer_id],
    ).fetchall()
    if contact:
        for name, value in zip(
            ("email", "name", "acquisition_channel", "accepts_marketing", "first_seen"),
            contact[0],
            strict=True,
        ):
            row[name] = value
    return row


def _rescored_segments(store: Store, customer_id: str, scored: dict[str, Any]) -> pd.Series | None:
    """The customer's row of :func:`retain.segments.customer_segments` (RFM measures,
    action, overdue ratio, ...) when their ``customer_scores`` row was rescored with
    segment columns: measured for them alone, against the RFM boundaries of the last
    full scoring, as :func:`retain.scoring.score_customers` measured them. Else None."""
    from retain.errors import RetainError
    from retain.scoring import load_score_basis
    from retain.segments import customer_segments

    if "segment" not in scored:
        return None
    try:
        boundaries = load_score_basis(store).boundaries
    except RetainError:
        return None
    if boundaries is None:
        return None
    frame = customer_segments(
        store, as_of=scored["as_of"], customers=[customer_id], boundaries=boundaries
    )
    return frame.iloc[0] if len(frame) else None


def _customer(
    store: Store,
    customer_id: str,
    row: pd.Series | dict[str, Any],
    index: CustomerIndex,
    history: int,
    recs: Recommendations | None,
    tier: Any = None,
) -> dict[str, Any]:
    from retain.segments.rules import TOP_PRODUCTS

    orders = int(row["orders"])
    net_revenue = plain(row["net_revenue"])
    notes: list[str] = []
    scores = None
    if index.score_columns or index.model != "none":
        scores = {"p_alive": plain(row.get("p_alive"))}
        scores.update({c: plain(row.get(c)) for c in index.score_columns})
    else:
        notes.append(NO_SCORES)
    action = plain(row["action"])
    if isinstance(action, str):
        action = action.replace(TOP_PRODUCTS, "their most bought products")
    result: dict[str, Any] = {
        "customer_id": customer_id,
        "profile": {
            c: plain(row.get(c))
            for c in ("email", "name", "acquisition_channel", "accepts_marketing", "first_seen")
        },
        "orders": {
            "orders": orders,
            "net_revenue": net_revenue,
            "aov": (net_revenue / orders) if orders and net_revenue is not None else None,
            "first_order_at": plain(row["first_order_at"]),
            "last_order_at": plain(row["last_order_at"]),
            "days_since_last_order": plain(row["days_since_last_order"]),
            "typical_gap_days": plain(row["typical_gap_days"]),
        },
        "scores": scores,
        "rfm": {
            "r_score": plain(row["r_score"]),
            "f_score": plain(row["f_score"]),
            "m_score": plain(row["m_score"]),
            "rfm": plain(row["rfm"]),
        },
        "segment": {"name": plain(row["segment"]), "action": action, "offer": plain(row["offer"])},
        "churn": {
            "risk": plain(row["churn_risk"]),
            "reason": plain(row["churn_reason"]),
            "value_at_stake": plain(row["value_at_stake"]),
            "overdue_ratio": plain(row["overdue_ratio"]),
        },
        "recommendations": customer_recommendations(recs, customer_id, tier=tier),
        "as_of": index.as_of,
        "notes": notes,
    }
    if history:
        result["history"] = order_history(store, customer_id, history)
    return result


def order_history(store: Store, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """The customer's latest ``limit`` orders, newest first, with their products."""
    frame = store.query(
        """
        SELECT o.order_id, o.ordered_at, o.net_revenue, o.currency, o.channel,
               coalesce((SELECT list(coalesce(l.name, l.sku) ORDER BY l.sku)
                         FROM order_lines l WHERE l.order_id = o.order_id), []) AS products
        FROM orders o
        WHERE o.customer_id = ?
        ORDER BY o.ordered_at DESC, o.order_id
        LIMIT ?
        """,
        [customer_id, limit],
    )
    frame["products"] = [list(p) for p in frame["products"]]
    return records(frame)


NO_LINES = (
    "no order lines in the store: recommendations learn from the products in each order "
    "(retain ingest lines.csv --format lines)"
)


@dataclass
class Recommendations:
    """The store's recommender and every customer's purchases, in memory, to rank a
    customer's personal recommendations on their first lookup (well under a millisecond)
    and keep them for the next ones; ranking a large store's customers all at once
    takes minutes.

    ``histories`` (:class:`retain.recommend.CustomerHistories`) are read once, when the
    service loads them; ``ranked`` keeps the latest :data:`RANKED_KEPT` customers'
    rankings. ``recommender`` is None (and ``note`` says why) when the store has no
    order lines.
    """

    recommender: Any
    k: int = 5
    histories: Any = None
    customers: int = 0
    note: str | None = None
    ranked: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> int:
        """Customers whose recommendations are answered at once: all of them."""
        return self.customers

    def of(self, customer_id: str) -> list[dict[str, Any]] | None:
        """The customer's recommendations, best first (None: no order when loaded)."""
        with self.lock:
            if customer_id in self.ranked:
                return self.ranked[customer_id]
        from retain.recommend import recommend_from_history

        items = recommend_from_history(self.histories, customer_id, self.k)
        with self.lock:
            if len(self.ranked) >= RANKED_KEPT:  # the oldest ranking goes first
                del self.ranked[next(iter(self.ranked))]
            self.ranked[customer_id] = items
        return items


RANKED_KEPT = 20_000
"""How many customers' ranked recommendations the service keeps: about 2.5 KB each, so
some 50 MB; ranking one again costs well under a millisecond."""


def build_recommendations(store: Store, k: int = 5) -> Recommendations:
    """Load (or learn, when not saved) the recommender and every customer's purchases
    (as ``retain recommend build`` kept them while they are current:
    :func:`retain.recommend.personal.saved_histories`; else
    :func:`retain.recommend.load_histories`)."""
    from retain.errors import StoreError
    from retain.recommend import load_histories, load_or_build
    from retain.recommend.personal import saved_histories

    if not store.scalar("SELECT count(*) FROM order_lines"):
        return Recommendations(None, k, note=NO_LINES)
    try:
        recommender = load_or_build(store)
    except StoreError as exc:
        return Recommendations(None, k, note=str(exc))
    # kept by `retain recommend build` while current, else read from the order lines
    histories = saved_histories(store, recommender)
    if histories is None:
        histories = load_histories(store, recommender=recommender)
    return Recommendations(recommender, k, histories=histories, customers=len(histories))


def customer_recommendations(
    recs: Recommendations | None, customer_id: str, k: int = 5, *, tier: Any = None
) -> dict[str, Any]:
    """Products to offer one customer, best first, each with its reason and ``price``
    (the median paid). For a customer in a loyalty ``tier``
    (:class:`retain.loyalty.rules.Tier`): ``tier``, its benefits, and with a discount each
    product's ``member_price``."""
    offer = None if tier is None else {"name": tier.name, **tier.benefits()}
    if recs is None:
        return {"items": [], "tier": offer, "note": "recommendations were not loaded"}
    if recs.recommender is None:
        return {"items": [], "tier": offer, "note": recs.note}
    ranked = recs.of(customer_id)
    if ranked is None:
        note = "no products bought by this customer are known yet"
        return {"items": [], "tier": offer, "note": note}
    items = []
    for row in ranked[:k]:
        price = recs.recommender.price(row["sku"])
        item = {
            "sku": plain(row["sku"]),
            "name": plain(row["name"]),
            "score": plain(row["score"]),
            "reason": row["reason"],
            "kind": row["kind"],
            "price": price,
        }
        if tier is not None and tier.discount:
            item["member_price"] = tier.price(price)
        items.append(item)
    return {"items": items, "tier": offer, "note": None}


def cart_recommendations(recs: Recommendations, skus: list[str], k: int = 5) -> dict[str, Any]:
    """Products to add to a cart of ``skus``, each with its reason (see
    :meth:`retain.recommend.Recommender.recommend_for_cart`). SKUs no order line
    has are listed in ``unknown_skus`` and otherwise ignored."""
    if recs.recommender is None:
        return {"skus": skus, "items": [], "unknown_skus": [], "note": recs.note}
    _, unknown = recs.recommender.known(list(skus))
    items = plain(recs.recommender.recommend_for_cart(list(skus), k))
    return {"skus": skus, "items": items, "unknown_skus": unknown, "note": None}


# -- models --------------------------------------------------------------------------------
MODEL_NAMES = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
UNIT_NAMES = {"D": "days", "W": "weeks"}
CHURN_RATES = list(range(1, 91))
"""Churn rates per month (percent) of the churn-lifespan curve."""

FIT_COLUMNS = (
    "fit_id, model, fitted_at, observation_end, unit, grain, customers, log_likelihood, "
    "converged, holdout_weeks, holdout_rmse, coalesce(kept, true) AS kept"
)

# Per customer, in the fit's grain, as of the last order's day: the time since the first
# purchase (days) and the repeat purchases, to size the P(alive) grid.
SPREAD_SQL = """
WITH per_customer AS (
    SELECT min(date_trunc($grain, ordered_at))                     AS first,
           count(DISTINCT date_trunc($grain, ordered_at)) - 1      AS frequency
    FROM orders GROUP BY customer_id
)
SELECT median(date_diff('day', first, date_trunc($grain, max_day))),
       quantile_disc(frequency, 0.975)
FROM per_customer, (SELECT max(ordered_at) AS max_day FROM orders)
"""


def models_payload(store: Store) -> dict[str, Any]:
    """The models page: the fitted model in use, its diagnostics and charts' data.

    Nothing is fitted here; everything comes from ``retain fit``'s parameters. Keys:

    - ``fit``: the fit the customer scores use (else the latest): ``fit_id``,
      ``model`` (and its ``label``), ``fitted_at``, ``observation_end``, ``unit``,
      ``grain``, ``customers``, ``log_likelihood``, ``converged``, holdout errors,
      ``scores_use_it``; None when nothing is fitted.
    - ``parameters`` and ``spend_parameters``: the repeat-purchase and Gamma-Gamma
      parameters: ``parameter``, ``estimate``, ``standard_error``, ``lower_95``,
      ``upper_95``.
    - ``fits``: every stored fit, newest first (without parameters), with ``kept``.
    - ``guard``: the fit guard on every model tried for the fit shown: ``model``,
      ``kept``, ``checks`` (``name``, ``passed``, ``value``, ``limit``, ``message``);
      ``choice``: why the model was chosen (criterion, scores, interval, reason).
    - ``refused``: the latest fit when the fit guard refused it (``fit_id``,
      ``guard``, ``reason``), else None.
    - ``card``: the model card of the fit shown (:func:`retain.scoring.model_card`:
      its data range, holdout, candidates and their scores, choice, guard, warnings
      and the latest backtest's summary), else None.
    - ``tracking``: weekly actual and predicted cumulative repeat purchases (see
      :func:`retain.diagnostics.tracking`).
    - ``p_alive``: P(alive) by repeat purchases (``frequencies``) and time since the
      last purchase (``since_last``, in ``unit``) for a customer first seen ``T`` ago
      (the median customer); ``values[i][j]``, None where no customer can be.
    - ``lifespan``: expected lifespan (months) = 1 / churn rate per month, for churn
      of 1% to 90%, and the store's own churn rate (percent per month, pooled over
      the last 12 months; see :func:`retain.metrics.business_clv`) when measured.
    - ``notes``.
    """
    result: dict[str, Any] = {
        "fit": None,
        "card": None,
        "parameters": [],
        "spend_parameters": [],
        "fits": [],
        "guard": [],
        "choice": None,
        "refused": None,
        "tracking": None,
        "p_alive": None,
        "lifespan": lifespan_payload(store),
        "notes": [],
    }
    if not table_columns(store, "model_fits") or not store.scalar(
        "SELECT count(*) FROM model_fits"
    ):
        result["notes"].append(NO_FITS)
        return result
    from retain.errors import StoreError
    from retain.scoring import load_fit

    scored = None
    if "fit_id" in table_columns(store, "score_basis"):
        scored = store.scalar("SELECT fit_id FROM score_basis LIMIT 1")
    fits = store.query(f"SELECT {FIT_COLUMNS} FROM model_fits ORDER BY fit_id DESC")
    result["fits"] = records(fits)
    refused = _refused_fit(store)
    if refused is not None:
        result["refused"] = refused
        result["notes"].append(
            f"the latest fit ({refused['fit_id']}) was refused by the fit guard: "
            f"{refused['reason']}"
        )
    try:
        model, spend, row = load_fit(store, None if scored is None else int(scored))
    except StoreError as exc:
        result["notes"].append(str(exc))
        return result
    fit = {k: plain(row.get(k)) for k in fits.columns}
    fit["label"] = MODEL_NAMES.get(str(row["model"]), str(row["model"]))
    fit["scores_use_it"] = scored is not None
    result["fit"] = fit
    result["card"] = card_payload(store, int(row["fit_id"]))
    result["guard"] = json.loads(row["guard"]) if row.get("guard") else []
    result["choice"] = json.loads(row["choice"]) if row.get("choice") else None
    result["parameters"] = records(model.summary().reset_index())
    if spend is not None:
        result["spend_parameters"] = records(spend.summary().reset_index())
    if not fit["converged"]:
        result["notes"].append(
            "the optimiser did not report convergence for this fit: treat its parameters "
            "with care, or refit (`retain fit`)"
        )
    if scored is None:
        result["notes"].append(
            "no customer scores yet: run `retain score` to score every customer with this fit"
        )
    if store.scalar("SELECT count(*) FROM orders"):
        result["tracking"] = tracking_payload(store, model, str(row["observation_end"])[:10])
        result["p_alive"] = p_alive_payload(store, model)
    return result


def card_payload(store: Store, fit_id: int | None = None) -> dict[str, Any] | None:
    """The model card of fit ``fit_id`` (:func:`retain.scoring.model_card`) with the
    model's name in words (``label``); None when the store has no such fit."""
    from retain.errors import StoreError
    from retain.scoring import model_card

    try:
        card = model_card(store, fit_id)
    except StoreError:
        return None
    card["label"] = MODEL_NAMES.get(card["model"], card["model"])
    for row in card["candidates"]:
        row["label"] = MODEL_NAMES.get(str(row["model"]), str(row["model"]))
    return plain(card)


def _shown_fit_id(store: Store) -> int | None:
    """The fit the customer scores use, else the latest the fit guard kept, else the
    latest; None when nothing is fitted."""
    if not table_columns(store, "model_fits"):
        return None
    if "fit_id" in table_columns(store, "score_basis"):
        scored = store.con.execute("SELECT fit_id FROM score_basis LIMIT 1").fetchall()
        if scored and scored[0][0] is not None:
            return int(scored[0][0])
    found = store.con.execute(
        "SELECT fit_id FROM model_fits ORDER BY (kept IS NOT false) DESC, fit_id DESC LIMIT 1"
    ).fetchall()
    return int(found[0][0]) if found else None


NO_BACKTEST = (
    "no backtest yet: run `retain backtest` to score every model's past forecasts on this "
    "store's own orders (calibration, deciles, bias by origin appear here)"
)
MODEL_HEALTH_NAMES = {**MODEL_NAMES, "learned": "learned"}


def model_health_payload(store: Store, horizon: int | None = None) -> dict[str, Any]:
    """The Model health page: the model card and the latest backtest.

    ``horizon``: days of the window shown (one of the backtest's horizons; default its
    shortest, the drift alert's). Keys:

    - ``card``: the model card of the fit in use (:func:`card_payload`), or None;
    - ``backtest``: the latest ``retain backtest`` run's ``backtest_id``,
      ``created_at``, ``as_of``, ``unit``, ``grain``, ``horizons``, ``origins``,
      ``summary`` (per model and horizon, means over origins), ``best`` and
      ``warnings``; None without a run;
    - ``horizon``: the horizon shown; ``origin``: its latest origin;
    - ``calibration``: per model, the reliability table (``bin``, ``customers``,
      ``predicted``, ``observed``: shares buying again within the horizon) at that
      origin; ``lift``: per model, the decile rows (``decile`` 1 the highest predicted
      value, ``actual_share`` of the window's revenue);
    - ``bias``: per origin of the horizon and model, ``predicted_total`` and
      ``actual_total`` purchases and ``bias_pct``;
    - ``errors``: models that could not be fitted at an origin (``origin``, ``model``,
      ``error``);
    - ``drift``: the drift alert (:func:`retain.metrics.alerts.drift_alerts`):
      ``alerts`` (rows) and ``checked`` figures;
    - ``notes``.
    """
    from retain.metrics.alerts import drift_alerts

    result: dict[str, Any] = {
        "card": card_payload(store, _shown_fit_id(store)),
        "backtest": None,
        "horizon": None,
        "origin": None,
        "calibration": [],
        "lift": [],
        "bias": [],
        "errors": [],
        "drift": None,
        "notes": [],
    }
    if result["card"] is None:
        result["notes"].append(NO_FITS)
    else:
        newer = store.con.execute(
            "SELECT max(fit_id) FROM model_fits WHERE kept IS NOT false AND fit_id > ?",
            [result["card"]["fit_id"]],
        ).fetchall()[0][0]
        if newer is not None:
            result["notes"].append(
                f"the customer scores use fit {result['card']['fit_id']}, shown here; fit "
                f"{newer} is newer: `retain score` scores the customers with it"
            )
    run = None
    if store.has_table("backtests"):
        from retain.backtest import latest_backtest

        run = latest_backtest(store)
    if run is None:
        result["notes"].append(NO_BACKTEST)
        return result
    result["backtest"] = plain(
        {
            k: run.get(k)
            for k in (
                "backtest_id",
                "created_at",
                "as_of",
                "unit",
                "grain",
                "horizons",
                "origins",
                "summary",
                "best",
                "warnings",
            )
        }
    )
    for row in result["backtest"]["summary"] or []:
        row["label"] = MODEL_HEALTH_NAMES.get(row["model"], row["model"])
    horizons = [int(h) for h in run.get("horizons") or []]
    if not horizons:
        result["notes"].append("the latest backtest has no horizon the history could hold")
        return result
    if horizon is not None and horizon not in horizons:
        raise DataError(
            f"the latest backtest has no {horizon}-day horizon",
            value=horizon,
            expected=f"one of {', '.join(map(str, horizons))} (days)",
        )
    shown = horizon if horizon is not None else min(horizons)
    result["horizon"] = shown
    rows = [r for r in run.get("results") or [] if int(r["horizon_days"]) == shown]
    result["errors"] = [
        {"origin": r["origin"], "model": r["model"], "error": r["error"]}
        for r in rows
        if "error" in r
    ]
    scored = [r for r in rows if "error" not in r]
    if scored:
        latest = max(str(r["origin"]) for r in scored)
        result["origin"] = latest
        for r in scored:
            label = MODEL_HEALTH_NAMES.get(r["model"], r["model"])
            if str(r["origin"]) == latest:
                result["calibration"].append(
                    {"model": r["model"], "label": label, "rows": r.get("calibration") or []}
                )
                if r.get("lift"):
                    result["lift"].append({"model": r["model"], "label": label, "rows": r["lift"]})
            result["bias"].append(
                {
                    "origin": r["origin"],
                    "model": r["model"],
                    "label": label,
                    "predicted_total": r.get("predicted_total"),
                    "actual_total": r.get("actual_total"),
                    "bias_pct": r.get("bias_pct"),
                    "ece": r.get("ece"),
                }
            )
        result["bias"].sort(key=lambda b: (str(b["origin"]), b["model"]))
    drift = drift_alerts(store, run)
    result["drift"] = {"alerts": records(drift), **plain(dict(drift.attrs))}
    return plain(result)


def _refused_fit(store: Store) -> dict[str, Any] | None:
    """The latest fit when the fit guard refused it: its id, model and the first check
    that failed; None when the latest fit was kept."""
    if "kept" not in table_columns(store, "model_fits"):
        return None
    last = store.query("SELECT fit_id, kept, guard FROM model_fits ORDER BY fit_id DESC LIMIT 1")
    if last.empty or last["kept"].isna().iloc[0] or bool(last["kept"].iloc[0]):
        return None
    tried = json.loads(last["guard"].iloc[0] or "[]")
    failing = [(t["model"], c) for t in tried for c in t["checks"] if not c["passed"]]
    reason = (
        f"{failing[0][0]}: {failing[0][1]['name']}: {failing[0][1]['message']}"
        if failing
        else "no model passed"
    )
    return {"fit_id": int(last["fit_id"].iloc[0]), "guard": tried, "reason": reason}


def tracking_payload(store: Store, model: Any, observation_end: str) -> dict[str, Any]:
    """Weekly actual vs predicted cumulative repeat purchases over the store's history."""
    from retain.diagnostics import tracking

    frame = tracking(store, model)
    return {
        "dates": [d.isoformat() for d in frame["date"]],
        "actual_cumulative": [float(v) for v in frame["actual_cumulative"]],
        "predicted_cumulative": [round(float(v), 3) for v in frame["predicted_cumulative"]],
        "fit_observation_end": observation_end,
        **plain(dict(frame.attrs)),
    }


def p_alive_payload(store: Store, model: Any, columns: int = 12) -> dict[str, Any]:
    """P(alive) grid for the median customer's time since their first purchase."""
    from retain.diagnostics import p_alive_matrix
    from retain.models.base import UNIT_DAYS

    unit = model.unit_ or "D"
    grain = {"D": "day", "W": "week"}[model.grain_ or "D"]
    median_days, top = store.con.execute(SPREAD_SQL, {"grain": grain}).fetchall()[0]
    T = max(float(round((median_days or 0) / UNIT_DAYS[unit])), float(columns))
    since = [float(v) for v in np.unique(np.round(np.linspace(0.0, T, columns + 1)))]
    frequencies = list(range(0, int(min(max(top or 0, 3), 20)) + 1))
    matrix = p_alive_matrix(model, T=T, frequencies=frequencies, since_last=since)
    return {
        "T": T,
        "unit": UNIT_NAMES[unit],
        "frequencies": frequencies,
        "since_last": since,
        "values": [[plain(v) for v in row] for row in matrix.to_numpy()],
    }


def lifespan_payload(store: Store, *, window_days: int | None = None) -> dict[str, Any]:
    """Lifespan = 1 / churn for monthly churn of 1% to 90%, and the store's measured churn:
    the overview's monthly churn (same definition, same default activity window: see
    :func:`retain.metrics.overview`), pooled over the last 12 complete months with a rate."""
    from retain.errors import RetainError
    from retain.metrics import business_clv, lifespan

    measured: dict[str, Any] = {}
    note = None
    try:
        if store.scalar("SELECT count(*) FROM orders"):
            measured = business_clv(store, "month", window_days=window_days)
            note = measured.get("note") or None
    except RetainError as exc:
        note = str(exc)
    churn = measured.get("churn_rate")
    return {
        "period": "month",
        "window_days": measured.get("window_days"),
        "window_rule": measured.get("window_rule"),
        "churn_rates": CHURN_RATES,
        "lifespan": [lifespan(c / 100) for c in CHURN_RATES],
        "store_churn_rate": plain(churn) if churn else None,
        "store_lifespan": plain(lifespan(churn / 100)) if churn else None,
        "measured_over": measured.get("periods") or [],
        "note": note,
    }


def rescore_customer(store: Store, customer_id: str) -> str | None:
    """Update one customer's row of ``customer_scores`` from the fitted parameters
    (:func:`retain.scoring.score_customers`).

    Returns None when done, else why it could not be (no fitted model or no full
    scoring yet, ...): the order stays stored either way.
    """
    return rescore_customers(store, [customer_id])[1].get(customer_id)


def rescore_customers(
    store: Store, customer_ids: list[str]
) -> tuple[CustomerIndex | None, dict[str, str]]:
    """Rescore customers whose orders just changed, in one pass: replace their rows of
    ``customer_scores`` (:func:`retain.scoring.rescore_customers`, the fit and settings of
    the last ``retain score``) and return a :class:`CustomerIndex` of them alone, its rows
    measured on the way (None when the scores have no segment columns: then only a new
    index has their segment), and why a customer was not rescored (no fitted model or no
    full scoring yet, no order by the observation day...). Their orders stay stored
    either way.
    """
    from retain.errors import RetainError
    from retain.scoring import rescore_customers as rescore

    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return None, {}
    if not table_columns(store, "model_fits") or not store.scalar(
        "SELECT count(*) FROM model_fits"
    ):
        return None, dict.fromkeys(ids, "not rescored: " + NO_FITS)
    try:
        report, segments = rescore(store, ids)
    except RetainError as exc:
        return None, dict.fromkeys(ids, f"not rescored: {exc}")
    rows = None
    if segments is not None and len(segments):
        frame, score_columns = _index_frame(store, segments)
        positions = index_positions(frame)
        as_of, model = segments.attrs.get("as_of"), "customer_scores"
        rows = CustomerIndex(frame, positions, as_of, model, score_columns)
    # without segment columns: every customer with an order by the observation day
    done = set(rows.positions) if rows is not None else set(ids) if report.customers else set()
    why = "not rescored: " + ("; ".join(report.warnings) or "no orders by the observation day")
    return rows, {c: why for c in ids if c not in done}


# -- campaigns -------------------------------------------------------------------------------
def campaigns_payload(store: Store, recent: int = 20) -> dict[str, Any]:
    """The Campaigns page: what each campaign did, from the outbox (``retain campaigns
    run`` writes it).

    Keys: ``campaigns`` (rows of :func:`retain.campaigns.campaign_report`: per campaign
    ``sent``, ``held``, ``capped``, ``suppressed``, ``failed``, ``control``, ``queued``,
    ``unconfirmed``, and ``orders_within_7d`` and ``net_revenue_within_7d`` of the
    customers sent a message, in the 7 days after it), ``totals`` (the same counts over
    every campaign), ``opt_outs`` (recorded opt-outs by reason), ``recent`` (the latest
    ``recent`` outbox rows: ``campaign``, ``customer_id``, ``status``, ``reason``,
    ``created_at``, ``sent_at``, ``subject``), ``notes``.
    """
    from retain.campaigns import campaign_report

    if not store.has_table("campaign_outbox"):  # a store older than campaigns, opened read-only
        return {
            "campaigns": [],
            "totals": {},
            "opt_outs": {},
            "recent": [],
            "notes": [NO_CAMPAIGNS],
        }
    report = campaign_report(store)
    counts = [c for c in report.columns if c != "campaign"]
    totals = {c: plain(report[c].sum()) for c in counts} if len(report) else {}
    opt_outs = (
        dict(
            store.con.execute(
                "SELECT reason, count(DISTINCT customer_id) FROM contact_suppressions "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        if store.has_table("contact_suppressions")
        else {}
    )
    latest = store.query(
        """SELECT campaign, customer_id, status, reason, created_at, sent_at, subject
           FROM campaign_outbox ORDER BY coalesce(sent_at, created_at) DESC, key LIMIT ?""",
        [recent],
    )
    return {
        "campaigns": records(report),
        "totals": totals,
        "opt_outs": {str(k): int(v) for k, v in opt_outs.items()},
        "recent": records(latest),
        "experiments": _experiments(store, [str(c) for c in report["campaign"]]),
        "notes": [] if len(report) else [NO_CAMPAIGNS],
    }


def _experiments(store: Store, names: list[str]) -> list[dict[str, Any]]:
    """Each campaign with two arms or more as ``retain experiments report --no-clv``
    reads it: ``campaign``, ``reference``, ``arms`` and ``sentence``."""
    from retain.errors import DataError
    from retain.experiments.analysis import experiment_report

    if not store.has_table("campaign_clicks"):  # a store older than experiments, read-only
        return []
    out = []
    for name in names:
        try:
            found = experiment_report(store, name, clv=False)
        except DataError:  # no customer in an arm yet
            continue
        if len(found["arms"]) > 1:
            keep = ("campaign", "reference", "arms", "comparisons", "sentence")
            out.append({k: found[k] for k in keep})
    return out


NO_CAMPAIGNS = (
    "no campaign has run yet: `retain campaigns init --out campaigns.toml`, then "
    "`retain campaigns run --campaigns campaigns.toml` (add --dry-run to see first)"
)
