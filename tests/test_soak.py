"A short soak test: 64 concurrent streaming clients against one real server, some hanging up (long form: bench/soak.py)."
import sys

import pytest


from conftest import ROOT, train_tiny

sys.path.insert(0, str(ROOT / "bench"))
from soak import soak, start_server  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("soak") / "run", max_iters=80, eval_interval=80)


def test_soak_64_clients_with_hang_ups(run_dir):
    server, url = start_server(str(run_dir))
    try: r = soak(url, server.pid, clients=64, seconds=15, max_length=40)
    finally: server.terminate(); server.wait(10)
    print(r)
    assert r["server_errors"] == 0 and r["client_errors"] == 0
    assert r["completed"] >= 64 and r["hung_up"] >= 5 and r["cancelled"] >= 1
    assert not r["greedy_mismatches"], r["greedy_mismatches"]         # batched greedy answers equal served alone
    assert r["metrics_stream_requests"] == r["requests"]              # /metrics counted what the clients sent
    assert r["metrics_generated_tokens"] >= r["tokens_received"]      # hung-up clients left some unread
    assert r["active_after"] == 0 and r["queue_after"] == 0
    assert r["rss_after_mb"] <= 1.1 * r["rss_before_mb"], r
