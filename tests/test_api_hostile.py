"""The server against hostile clients and internal failures: every request's work is bounded before it reaches the
engine, errors have the documented shape (OpenAI's on /v1, FastAPI's elsewhere) and never leak the server's insides,
and a small request sent meanwhile still gets its answer.

Two kinds of server: a real `python -m gptlite.api` process (with an API key; its tests are marked slow), and a real
uvicorn server in a thread of this process (`InProcess`), for the cases that reach into the engine: a fault in one
row, a stalled or killed engine thread, a blocked tokenizer. Timeouts below are hang detectors, never speed checks."""
import json
import math
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
import uvicorn

from gptlite.api import create_app, main
from gptlite.settings import ServerSettings
from gptlite.engine import Scheduler, Sequence, generate
from gptlite.sampling import token_bytes_table

from conftest import free_port, run_main
from test_api import Served

KEY = "hostile-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
HANG = 30            # seconds: a request that takes longer has hung (a tiny model answers these in well under a second)


@pytest.fixture(scope="module")
def srv(tiny_run):
    s = Served("--checkpoint", str(tiny_run), "--model-name", "tiny", "--max-body-bytes", str(2**20),
               env={"GPTLITE_API_KEY": KEY})
    s.wait()
    yield s
    s.stop()


def post(url: str, path: str, body=None, headers=AUTH) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=HANG)


def assert_small_request_answers(url: str, headers=AUTH):
    "A concurrent small request still gets its whole answer (within the hang detector's time)."
    r = httpx.post(url + "/generate", json={"prompt": "The", "max_length": 3, "temperature": 0}, headers=headers,
                   timeout=HANG)
    assert r.status_code == 200 and r.json()["completion_tokens"] >= 1, r.text


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None, type_: str = "invalid_request_error"):
    assert r.status_code == status, r.text
    error = r.json()["error"]                                    # JSON, in OpenAI's shape
    assert error["type"] == type_ and error["message"], error
    if param is not None: assert error["param"] == param, error
    assert "Traceback" not in r.text and "/gptlite/" not in r.text and ".py" not in r.text


class in_background(threading.Thread):
    "fn(*args) in a thread of its own, started; `.result` holds what it returned."
    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result = fn, args, None
        self.start()

    def run(self): self.result = self.fn(*self.args)


# --- bounded before the engine: a real server process ---------------------------------------------------------------


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_long_and_many_stop_strings_are_bounded_and_stall_no_one(srv):
    stops = [("ab" * 500)[:999 - i] + "!" for i in range(8)]             # eight stops at the 1,000-character limit
    hostile = [in_background(post, srv.url, "/generate", {"prompt": "The", "max_length": 200, "stop": stops})
               for _ in range(4)]
    assert_small_request_answers(srv.url)
    for t in hostile: t.join(HANG)
    assert all(t.result.status_code == 200 for t in hostile)
    r = post(srv.url, "/generate", {"prompt": "x", "stop": ["a" * 100_000]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "stop"]
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "x", "stop": ["a"] * 5})
    assert_openai_error(r, 400, "stop")
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "x", "stop": "a" * 1001})
    assert_openai_error(r, 400, "stop")


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_huge_v1_bodies_are_refused_before_any_work(srv):
    health = []
    def poll():
        for _ in range(20): health.append(httpx.get(srv.url + "/health", timeout=HANG).status_code)
    poller = in_background(poll)
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": [[1, 2]] * 100_000, "n": 16})   # 900 KB
    assert_openai_error(r, 400, "prompt")
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": ["x"] * 5, "n": 16})   # 80 generations, 64 allowed
    assert_openai_error(r, 400, "n")
    assert "at most 64" in r.json()["error"]["message"]
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "x" * (2**20 + 10)})        # past --max-body-bytes
    assert_openai_error(r, 413, "body")
    def chunks():                                                                               # no Content-Length
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(300): yield b"x" * 4096
        yield b'"}'
    r = httpx.post(srv.url + "/v1/completions", content=chunks(), headers={**AUTH, "content-type": "application/json"},
                   timeout=HANG)
    assert_openai_error(r, 413, "body")
    r = post(srv.url, "/generate", {"prompt": "y" * 2**20})
    assert r.status_code == 413 and "larger than 1,048,576 bytes" in r.json()["detail"]
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": [[10**9]]})
    assert_openai_error(r, 400, "prompt")
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "x", "user": "u" * 257})
    assert_openai_error(r, 400, "user")
    poller.join(HANG)
    assert health and set(health) == {200}
    assert_small_request_answers(srv.url)


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_lone_surrogates_get_json_errors_naming_the_field(srv):
    raw = lambda path, text: httpx.post(srv.url + path, content=text.encode(), timeout=HANG,
                                        headers={**AUTH, "content-type": "application/json"})
    assert_openai_error(raw("/v1/completions", '{"model": "\\ud800", "prompt": "x"}'), 400, "model")
    assert_openai_error(raw("/v1/completions", '{"model": "tiny", "prompt": "a\\udc00b"}'), 400, "prompt")
    for path, body, field in [("/generate", '{"prompt": "\\ud800"}', "prompt"), ("/tokenize", '{"text": "\\udfff"}', "text"),
                              ("/generate", '{"prompt": "x", "stop": ["\\ud83d"]}', "stop")]:
        r = raw(path, body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", field], r.text
    r = raw("/v1/completions", '{"model": "tiny", "prompt": "x", "user": "\\ud800"}')
    assert_openai_error(r, 400, "user")
    assert_small_request_answers(srv.url)


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_a_key_on_every_route_but_health(srv):
    paths = httpx.get(srv.url + "/openapi.json", headers=AUTH).json()["paths"]
    assert httpx.get(srv.url + "/openapi.json").status_code == 401
    for path, methods in paths.items():
        for method in methods:
            r = httpx.request(method.upper(), srv.url + path, json={}, timeout=HANG)
            if path == "/health":
                assert r.status_code == 200
                continue
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
            if path.startswith("/v1/"): assert_openai_error(r, 401, type_="authentication_error")
            else: assert "API key" in r.json()["detail"]
            wrong = httpx.request(method.upper(), srv.url + path, json={}, headers={"Authorization": "Bearer " + KEY[:-1]})
            assert wrong.status_code == 401


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_host_header_must_name_the_server(srv):
    r = httpx.get(srv.url + "/model", headers={**AUTH, "Host": "evil.example"})
    assert r.status_code == 400 and "Host" in r.json()["detail"]
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "x"}, headers={**AUTH, "Host": "evil.example:80"})
    assert_openai_error(r, 400, "Host")
    assert httpx.get(srv.url + "/model", headers={**AUTH, "Host": f"localhost:{srv.port}"}).status_code == 200


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_sampling_edges_stay_finite_and_tiny_temperatures_are_greedy(srv, tiny_model):
    model, tok = tiny_model
    greedy = generate(model, tok, "The baker", max_new_tokens=12, temperature=0)[0].text
    for t in (1e-30, 1e-6):
        r = post(srv.url, "/generate", {"prompt": "The baker", "max_length": 12, "temperature": t})
        assert r.status_code == 200 and r.json()["generated_text"] == greedy, (t, r.text)
    r = post(srv.url, "/generate", {"prompt": "x", "repetition_penalty": 1e-300})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "repetition_penalty"]
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "The baker", "max_tokens": 8, "temperature": 2,
                                          "repetition_penalty": 10, "logprobs": 5, "seed": 1})
    assert r.status_code == 200
    lp = r.json()["choices"][0]["logprobs"]
    values = lp["token_logprobs"] + [v for d in lp["top_logprobs"] for v in d.values()]
    assert values and all(math.isfinite(v) for v in values)


def test_safe_defaults_on_the_command_line(tmp_path, capsys):
    code, _, err = run_main(main, ["--host", "0.0.0.0", "--checkpoint", str(tmp_path)], capsys)
    assert code == 2 and "--api-key" in err and "--insecure" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(main, ["--api-key", "short"], capsys)
    assert code == 2 and "--api-key" in err and "16" in err
    code, _, err = run_main(main, ["--host", "0.0.0.0", "--insecure", "--checkpoint", str(tmp_path / "none")], capsys)
    assert code == 2 and "no checkpoint" in err                                # past the bind check: the next error


# --- OpenAI semantics that evaluation harnesses rely on -------------------------------------------------------------


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_echo_logprobs_equal_the_exported_hugging_face_model(srv, tiny_model):
    # an evaluation harness's loglikelihood request: token ids, echo, logprobs=1, max_tokens 0 or 1
    from gptlite.model import to_hf
    model, tok = tiny_model
    hf = to_hf(model).eval()
    ids = tok.encode("The baker said that the bread was good, and she laughed.")
    with torch.no_grad(): logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1)   # (T, V)
    expected = [None] + [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    for max_tokens in (0, 1):
        r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": ids, "echo": True, "logprobs": 1,
                                              "max_tokens": max_tokens, "temperature": 0})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(ids) + max_tokens and choice["text"].startswith(tok.decode(ids))
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert all(abs(a - b) < 1e-4 for a, b in zip(lp["token_logprobs"][1:len(ids)], expected[1:]))
        for t in range(1, len(ids)):                                   # each prompt token's most likely alternative
            (name, value), = lp["top_logprobs"][t].items()
            assert abs(value - float(logp[t - 1].max())) < 1e-4 and value >= lp["token_logprobs"][t] - 1e-6
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    c = client.completions.create(model="tiny", prompt=ids, echo=True, logprobs=1, max_tokens=0)
    assert c.choices[0].logprobs.token_logprobs[0] is None
    assert abs(sum(c.choices[0].logprobs.token_logprobs[1:]) - sum(expected[1:])) < 1e-3
    assert c.usage.completion_tokens == 0 and c.usage.prompt_tokens == len(ids)


@pytest.mark.slow                       # a server process of its own: in CI, not in the everyday loop
def test_byte_fragment_tokens_are_shown_as_bytes(srv, tiny_model):
    model, tok = tiny_model
    table = token_bytes_table(tok)
    ids = tok.encode("东京 café — naïve 🙂")
    fragments = [i for i in ids if table[i] and not _utf8(table[i])]
    assert fragments, "the example needs a token that holds part of a character"
    r = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": ids, "echo": True, "logprobs": 2, "max_tokens": 1})
    lp = r.json()["choices"][0]["logprobs"]
    shown = lp["tokens"][:len(ids)]
    assert "\ufffd" not in "".join(shown)
    for i, name in zip(ids, shown):
        if i in fragments: assert name == "bytes:" + "".join(f"\\x{b:02x}" for b in table[i])
        else: assert name == table[i].decode()
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0


def _utf8(b: bytes) -> bool:
    try: b.decode("utf-8")
    except UnicodeDecodeError: return False
    return True


# --- faults inside the engine: a real uvicorn server in this process ------------------------------------------------


class InProcess:
    "A real uvicorn server on a loopback port, in a thread of this process, so that a test can reach into its engine."
    def __init__(self, model, tok, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(ServerSettings(model_name="tiny", **settings), model=model, tokenizer=tok)
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical"))
        self.thread = in_background(self.uvicorn.run)
        deadline = time.time() + HANG
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200: return
            except httpx.TransportError: pass
            time.sleep(0.05)
        raise TimeoutError("the in-process server did not start")

    @property
    def engine(self) -> Scheduler: return self.app.state.server.scheduler

    def stop(self):
        self.uvicorn.should_exit = True
        self.thread.join(HANG)


@pytest.fixture
def inproc(tiny_model):
    servers = []
    def start(**settings) -> InProcess:
        servers.append(InProcess(*tiny_model, **settings))
        return servers[-1]
    yield start
    for s in servers: s.stop()


def gate_steps(monkeypatch, engine: Scheduler) -> threading.Event:
    "Hold the engine's decoding steps until the returned event is set (admissions still happen)."
    go, step = threading.Event(), engine._step
    def held(*args, **kw):
        go.wait(HANG)
        return step(*args, **kw)
    monkeypatch.setattr(engine, "_step", held)
    return go


FAULT = [7, 7, 7, 7, 7]          # a prompt (token ids) whose row fails in the engine


def test_a_fault_in_one_row_fails_that_request_alone(inproc, tiny_model, monkeypatch):
    model, tok = tiny_model
    s = inproc()
    accept = Sequence.accept
    def faulty(self, token, *args, **kw):
        if self.ids[:len(FAULT)] == FAULT and len(self.ids) > len(FAULT) + 2:
            raise ValueError("injected fault; /secret/server/path.py")          # a ValueError: still not the client's
        return accept(self, token, *args, **kw)
    monkeypatch.setattr(Sequence, "accept", faulty)
    bodies = [{"model": "tiny", "prompt": p, "max_tokens": 12, "temperature": 0} for p in ("The baker", "She said")]
    results = {}
    def send(name, body): results[name] = post(s.url, "/v1/completions", body, headers={})
    threads = [in_background(send, i, b) for i, b in enumerate(bodies)]
    threads.append(in_background(send, "fault", {"model": "tiny", "prompt": FAULT, "max_tokens": 12, "temperature": 0}))
    for t in threads: t.join(HANG)
    assert_openai_error(results["fault"], 500, type_="server_error")
    assert "secret" not in results["fault"].text and "injected" not in results["fault"].text
    for i, body in enumerate(bodies):
        assert results[i].status_code == 200
        assert results[i].json()["choices"][0]["text"] == generate(model, tok, body["prompt"], max_new_tokens=12,
                                                                    temperature=0)[0].text
    r = post(s.url, "/generate", {"prompt": tok.decode(FAULT), "max_length": 12, "temperature": 0}, headers={})
    assert r.status_code == 500 and r.json() == {"detail": r.json()["detail"]} and "secret" not in r.text  # FastAPI's shape
    assert_small_request_answers(s.url, headers={})


def test_abandoned_queued_requests_leave_the_queue_at_once(inproc, monkeypatch):
    s = inproc(max_batch_size=1, max_queue=2)
    go = gate_steps(monkeypatch, s.engine)
    body = {"prompt": "The", "max_length": 5}
    first = in_background(post, s.url, "/generate", body, {})              # takes the one slot, then waits
    deadline = time.time() + HANG
    while s.engine.active < 1 and time.time() < deadline: time.sleep(0.02)
    clients = [send_and_hang_up(s.port, "/generate", body) for _ in range(2)]     # two that queue, then hang up
    while s.engine.queue_depth < 2 and time.time() < deadline: time.sleep(0.02)
    assert s.engine.queue_depth == 2
    assert post(s.url, "/generate", body, headers={}).status_code == 429           # the queue is full
    for c in clients: c.close()
    while s.engine.queue_depth > 0 and time.time() < deadline: time.sleep(0.05)
    assert s.engine.queue_depth == 0 and s.engine.active == 1                      # gone while the engine still waits
    third = in_background(post, s.url, "/generate", body, {})              # a place is free again
    go.set()
    for t in [first, third]: t.join(HANG)
    assert first.result.status_code == 200 and third.result.status_code == 200
    assert_small_request_answers(s.url, headers={})


def send_and_hang_up(port: int, path: str, body: dict) -> socket.socket:
    "A request sent on a raw socket, whose answer nobody reads: closing the socket is a client that went away."
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_a_request_past_its_deadline_is_504_and_frees_its_place(inproc, monkeypatch):
    s = inproc(request_timeout=0.5)
    go = gate_steps(monkeypatch, s.engine)
    r = post(s.url, "/v1/completions", {"model": "tiny", "prompt": "The", "max_tokens": 5}, headers={})
    assert_openai_error(r, 504, type_="server_error")
    r = post(s.url, "/generate", {"prompt": "The", "max_length": 5}, headers={})
    assert r.status_code == 504 and "longer than 0.5 s" in r.json()["detail"]
    go.set()
    deadline = time.time() + HANG
    while (s.engine.active or s.engine.queue_depth) and time.time() < deadline: time.sleep(0.05)
    assert s.engine.active == 0 and s.engine.queue_depth == 0
    assert_small_request_answers(s.url, headers={})


def test_a_killed_engine_thread_is_reported_and_no_request_waits_forever(inproc, monkeypatch):
    s = inproc()
    def die(*args, **kw): raise SystemExit("the engine thread is killed")        # not an Exception: the loop dies
    monkeypatch.setattr(s.engine, "_step", die)
    r = post(s.url, "/v1/completions", {"model": "tiny", "prompt": "The", "max_tokens": 5}, headers={})
    assert_openai_error(r, 503, type_="server_error")
    s.engine.thread.join(HANG)
    assert not s.engine.thread.is_alive()
    health = httpx.get(s.url + "/health", timeout=HANG)
    assert health.status_code == 503 and health.json()["status"] == "error" and "stopped" in health.json()["detail"]
    r = post(s.url, "/generate", {"prompt": "The", "max_length": 5}, headers={})
    assert r.status_code == 503 and "engine" in r.json()["detail"]


def test_a_stalled_engine_makes_health_an_error(inproc, monkeypatch):
    s = inproc(stall_timeout=0.5)
    go = gate_steps(monkeypatch, s.engine)
    waiting = in_background(post, s.url, "/generate", {"prompt": "The", "max_length": 5}, {})
    deadline, health = time.time() + HANG, None
    while time.time() < deadline:
        health = httpx.get(s.url + "/health", timeout=HANG)
        if health.status_code == 503: break
        time.sleep(0.1)
    assert health.status_code == 503 and "no progress" in health.json()["detail"]
    go.set()
    waiting.join(HANG)
    assert httpx.get(s.url + "/health", timeout=HANG).status_code == 200


def test_tokenizing_runs_off_the_event_loop(inproc, monkeypatch):
    s = inproc()
    server, entered, release = s.app.state.server, threading.Event(), threading.Event()
    encode = server.encode
    def slow_encode(text):
        entered.set()
        release.wait(HANG)
        return encode(text)
    monkeypatch.setattr(server, "encode", slow_encode)
    for path, body in [("/generate", {"prompt": "The", "max_length": 3}), ("/tokenize", {"text": "The"}),
                       ("/v1/completions", {"model": "tiny", "prompt": "The", "max_tokens": 3})]:
        entered.clear(); release.clear()
        t = in_background(post, s.url, path, body, {})
        assert entered.wait(HANG)                                   # tokenizing, and blocked there ...
        assert httpx.get(s.url + "/health", timeout=HANG).status_code == 200       # ... while the loop still serves
        release.set()
        t.join(HANG)
