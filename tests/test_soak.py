"A short soak test: 64 concurrent streaming clients against one real server, some hanging up (long form: bench/soak.py)."
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from soak import soak, start_server  # noqa: E402

CLIENTS, EACH = 64, 3


@pytest.mark.slow
def test_soak_64_clients_with_hang_ups(tiny_run):
    # A fixed number of requests, not a fixed time: what is checked is behaviour, whatever the machine's speed.
    server, url = start_server(str(tiny_run))
    try: r = soak(url, server.pid, clients=CLIENTS, max_length=40, requests_per_client=EACH)
    finally: server.terminate(); server.wait(10)
    print(r)
    assert r["server_errors"] == 0 and r["client_errors"] == 0
    assert r["requests"] == CLIENTS * EACH and r["completed"] + r["hung_up"] == r["requests"]   # every request answered
    assert r["hung_up"] >= 5 and r["cancelled"] >= 1
    assert not r["greedy_mismatches"], r["greedy_mismatches"]         # batched greedy answers equal served alone
    assert r["metrics_stream_requests"] == r["requests"]              # /metrics counted what the clients sent
    assert r["metrics_generated_tokens"] >= r["tokens_received"]      # hung-up clients left some unread
    assert r["active_after"] == 0 and r["queue_after"] == 0
    # memory returns to its level after the load: against the baseline taken after the warm-up, a generous bound
    assert r["rss_after_mb"] <= 1.5 * r["rss_before_mb"], r
