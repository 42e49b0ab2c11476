"""MBG/NBD: the modified BG/NBD (Batislam, Denizel & Filiztekin 2007).

As :mod:`retain.models.bgnbd`, except that a customer may also drop out right
after the first purchase, so customers with no repeat purchase are not
certainly alive. Per customer::

    log L = log G(r+x) - log G(r) + r log(alpha) + log B(a, b+x+1) - log B(a, b)
            + logaddexp(-(r+x) log(alpha+T), log(a) - log(b+x) - (r+x) log(alpha+t_x))

Given alive at T the dropout probability's posterior is Beta(a, b+x+1); the
predictions are those of BG/NBD with that posterior.
"""

from __future__ import annotations

from retain.models.bgnbd import _BetaGeoFamily


class ModifiedBetaGeo(_BetaGeoFamily):
    """MBG/NBD (Batislam et al. 2007): parameters ``r``, ``alpha``, ``a``, ``b``."""

    name = "mbgnbd"
    _offset = 1
