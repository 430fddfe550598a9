"""The fault-injection run of ``benchmarks/fault_injection.py`` with 100 paid orders: real
PostgreSQL, Redis, ``panel worker`` processes, gunicorn, the PDS stand-in failing a fifth of its
calls, signed Stripe webhooks (shuffled, duplicated, some at once), worker processes (most of them
mid-job) SIGKILLed about every 10th job run, one Redis restart, one PostgreSQL restart. Takes a minute
or two on 2 cores."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import panel_pds.standin  # noqa: F401,E402  (our plugin: an import error must fail, not skip)
pytest.importorskip("localstripe")

from fault_injection import Config, run  # noqa: E402


@pytest.mark.slow
def test_no_order_lost_stuck_or_leaked_under_faults(capsys):
    figures = run(Config(orders=100, customers=10, workers=3, settle=120, seed=8, kill_every=0.7))
    with capsys.disabled():
        print("\n" + "\n".join(figures.lines()))
    # the faults really happened (so the zeros below mean something)
    assert set(figures.injected) == {"5xx", "timeout", "lost"}, figures.injected
    assert figures.kills["worker mid-job"] > 0 and figures.kills["worker"] > 0, figures.kills
    assert sum(figures.kills.values()) * 20 >= figures.claims, "fewer kills than one per 20 job runs"
    assert len(figures.restarts) == 2 and figures.lost_runs > 0
    assert figures.deliveries > figures.events and figures.order_replays > 0
    assert figures.cancelled > 0 and figures.paid >= 90
    # and nothing was lost, stuck, duplicated or leaked
    assert figures.unsettled == [], "paid orders without a live service (or a failure with a reason)"
    assert figures.duplicates == 0, "a hostname got a second PDS"
    assert figures.leaked == [], "PDS services that no service accounts for"
    assert figures.applied_twice == [], "Stripe events applied twice"
    assert figures.unprocessed == [], "Stripe events never processed"
    assert figures.webhook_5xx == 0 and figures.orders_5xx == 0
    assert figures.settle_seconds is not None and figures.settle_seconds <= 120
    assert figures.problems() == []
