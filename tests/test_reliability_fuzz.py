"""Reliability of the environments: arbitrary model output through every built-in env's parser and
step (hypothesis, 10,200 strings), parsing time on pathological replies, and the faults of the
outside world (retriever server, missing benchmark packages and data)."""

import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import ENV_NAMES, make_env
from envs.alfworld.prompts import NOTHING
from envs.base import INFO_KEYS
from envs.search.prompts import FORMAT_REMINDER
from envs.search.retriever import RetrieverClient, RetrieverError
from envs.search.server import start_in_thread
from envs.webshop.prompts import split_action

PER_ENV = 3400                        # x 3 environments = 10,200 fuzzed replies
TAGS = ("think", "action", "search", "answer", "information")
MARKUP = ([f"<{t}>" for t in TAGS] + [f"</{t}>" for t in TAGS]
          + ["<", ">", "</", "<action", "action>", "</ action>", "<ACTION>", "<action/>", "<<action>>", "[", "]"])
WORDS = ["look", "inventory", "help", "go to fridge 1", "take apple 1 from countertop 1", "search[red shoes]",
         "click[buy now]", "click[back to search]", "click[< prev]", "search[]", "click[", "Paris", "1871",
         "Veltrano Works", "the", ""]
SPACE = " \t\n\r\x0b\x0c\x85\xa0\u2003\u2028\u3000"
SCRIPTS = ["北京", "Привет", "γεια", "こんにちは", "مرحبا", "한국", "é", "ß", "İ", "\u200b", "\ufeff", "\x00", "\x1b[31m",
           "🙂"]
# scripts the Latin-only rule rejects: Greek, Cyrillic, Arabic, kana, CJK, Hangul
FOREIGN = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0600-\u06ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")


def _wrap(tag, body, opened, closed):
    return (f"<{tag}>" if opened else "") + body + (f"</{tag}>" if closed else "")


WHITESPACE = st.text(SPACE, max_size=8)
PIECE = st.one_of(st.sampled_from(MARKUP), st.sampled_from(WORDS), st.sampled_from(SCRIPTS), WHITESPACE,
                  st.text(max_size=12))                       # any code point but surrogates, controls included
SOUP = st.lists(PIECE, max_size=40).map("".join)
NESTED = st.recursive(PIECE, lambda inner: st.builds(_wrap, st.sampled_from(TAGS), st.lists(inner, max_size=4)
                                                     .map("".join), st.booleans(), st.booleans()), max_leaves=24)


@st.composite
def well_formed(draw):
    """A reply that follows the format (but for a missing <think> one time in four), with arbitrary
    text around and inside it."""
    tag = draw(st.sampled_from(["action", "search", "answer"]))
    latin = st.text(st.characters(max_codepoint=0x24F), max_size=30)
    webshop = st.builds("{}[{}]".format, st.sampled_from(["search", "click"]), latin)
    body = draw(st.one_of(st.sampled_from(WORDS), webshop, latin))
    think = f"<think>{draw(st.one_of(latin, SOUP))}</think>" if draw(st.integers(0, 3)) else ""
    return f"{draw(latin)}{think}<{tag}>{body}</{tag}>{draw(latin)}"


def responses():
    """Model replies of every shape: tag soup, nested and unclosed tags, well-formed answers, control
    characters and foreign scripts, whitespace only, one tag repeated thousands of times, long text."""
    repeated = st.builds(lambda tag, n, tail: tag * n + tail, st.sampled_from(MARKUP), st.integers(1, 20_000), SOUP)
    long = st.builds(lambda text, n: text * n, st.one_of(SOUP, NESTED).filter(bool), st.integers(200, 5_000))
    return st.one_of(SOUP, NESTED, well_formed(), repeated, long, st.text(SPACE, max_size=300))


def closed(text, tag):
    start = text.find(f"<{tag}>")
    return start != -1 and text.find(f"</{tag}>", start) != -1


def check_think_action_rule(response, action, valid, name):
    """ALFWorld / WebShop: valid only with a closed <think> and exactly one closed <action>, Latin script."""
    if not closed(response, "action") or not closed(response, "think") or FOREIGN.search(response):
        assert not valid
    if len(response) < 5_000:                 # the rule as a regex, affordable on short replies
        actions = re.findall(r"<action>(.*?)</action>", response, flags=re.DOTALL)
        if len(actions) != 1:
            assert not valid
        if actions:
            assert action == actions[-1].strip().lower()[:200]
    if valid:
        assert action and action == action.strip().lower() and len(action) <= 200
        assert name != "webshop" or re.fullmatch(r"(search|click)\[.+\]", action, flags=re.DOTALL)


def check_search_rule(response, action, valid):
    """Search-QA: valid only with exactly one closed <search> or <answer>, not both, Latin script."""
    has = {tag: f"<{tag}>" in response or f"</{tag}>" in response for tag in ("search", "answer")}
    if not (closed(response, "search") or closed(response, "answer")) or all(has.values()) \
            or FOREIGN.search(response):
        assert not valid
    if valid:
        assert re.fullmatch(r"<(search|answer)>\S(.{0,298}\S)?</\1>", action, flags=re.DOTALL)
    else:
        assert action == ""


def check_step(env, before, action, result):
    obs, reward, done, info = result
    assert isinstance(obs, str) and isinstance(reward, float) and math.isfinite(reward) and type(done) is bool
    assert set(INFO_KEYS) <= set(info) and isinstance(info["admissible_actions"], list)
    assert info["step"] == before[1]["step"] + 1 and isinstance(info["score"], float)
    if env.name == "alfworld" and action.strip() not in before[1]["admissible_actions"] + ["help"]:
        assert obs == NOTHING and info["admissible_actions"] == before[1]["admissible_actions"]
    if env.name == "webshop" and split_action(action) == ("", ""):
        assert obs == before[0] and reward == 0.0
    if env.name == "search":
        assert reward in (0.0, 1.0) and (obs == FORMAT_REMINDER) == (not info["valid_action"])
    assert isinstance(env.render_prompt(obs, [(before[0], action)], info, 2), str)


@pytest.fixture(scope="module")
def envs():
    return {name: make_env(name, "builtin") for name in ENV_NAMES}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_arbitrary_model_output_never_breaks_an_env(name, envs):
    """The rollout sends whatever the model writes through parse_action and step: neither may raise,
    and a reply that breaks the format rules must come back invalid."""
    env, seen = envs[name], {"strings": 0, "valid": 0, "long": 0, "control": 0, "foreign": 0, "blank": 0,
                             "unclosed": 0}

    @settings(max_examples=PER_ENV, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(response=responses(), seed=st.integers(0, 999))
    def check(response, seed):
        action, valid = env.parse_action(response)
        assert isinstance(action, str) and type(valid) is bool
        if name == "search":
            check_search_rule(response, action, valid)
        else:
            check_think_action_rule(response, action, valid, name)
        before = env.reset(seed, split="train")
        result = env.step(action)
        check_step(env, before, action, result)
        if name == "search":
            assert result[3]["valid_action"] == valid
        before = result[0], result[3]
        if not result[2]:
            check_step(env, before, response, env.step(response))     # the raw reply is no threat either
        seen["strings"] += 1
        seen["valid"] += valid
        seen["long"] += len(response) > 10_000
        seen["control"] += bool(re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", response))
        seen["foreign"] += bool(FOREIGN.search(response))
        seen["blank"] += not response.strip()
        seen["unclosed"] += any(f"<{t}>" in response and not closed(response, t) for t in TAGS)

    check()
    print(f"\n{name}: {seen}")
    assert seen["strings"] >= PER_ENV                   # 3 x 3,400 >= 10,000 replies in all
    # every shape was actually generated; the counts move a little from run to run (measured 22 and 26 valid
    # WebShop replies in two runs of the same code), so the bar sits well below them
    assert min(seen.values()) >= 10, seen


@pytest.mark.parametrize("name", ENV_NAMES)
def test_parsing_is_linear_on_repeated_tags(name, envs):
    """A reply that opens one tag 10,000 times parses in well under a millisecond; a lazy regex rescans
    the rest of the reply from every open tag and took seconds (minutes at 30,000)."""
    tag = "search" if name == "search" else "action"
    for reply in (f"<{tag}>" * 10_000, "<think>" * 10_000 + f"<{tag}>x</{tag}>", "<think>a</think>" * 10_000):
        start = time.perf_counter()
        envs[name].parse_action(reply)
        assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------- retriever server faults


class Misbehaving:
    """A local retriever that answers with one chosen fault, counting the requests it got."""

    def __init__(self, answer):
        self.calls, self.release = 0, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer(self, outer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = start_in_thread(self.server)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _reply(handler, body: bytes, code=200):
    handler.send_response(code)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


FAULTS = {
    "hang": lambda handler, server: server.release.wait(10),
    "hang_up": lambda handler, server: handler.connection.close(),          # no status line at all
    "wrong_shape": lambda handler, server: _reply(handler, b'{"result": []}'),
    "not_utf8": lambda handler, server: _reply(handler, b'\xff\xfe{"result"'),
    "503": lambda handler, server: _reply(handler, b"busy", 503),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_retriever_faults_are_retried_a_bounded_time_then_named(fault):
    """tests/test_env_search.py covers 500, a hang and truncated JSON; these are the other ways a server
    fails. Each costs 1 + retries requests, the back-off doubles, and the whole call is bounded."""
    server = Misbehaving(FAULTS[fault])
    try:
        client = RetrieverClient(server.url, timeout=0.3, retries=2, backoff=0.1)
        start = time.perf_counter()
        with pytest.raises(RetrieverError) as caught:
            client.search(["who founded veltrano works"])
        elapsed = time.perf_counter() - start
    finally:
        server.close()
    assert server.calls == 3 and server.url in str(caught.value) and "3 attempt" in str(caught.value)
    waits = 0.1 + 0.2 + (3 * 0.3 if fault == "hang" else 0.0)
    assert waits <= elapsed < waits + 2.0


def test_retriever_fault_mid_episode_raises_not_hangs():
    """An episode whose retriever dies raises RetrieverError from step (an infrastructure fault the
    trainer reports), never returns a made-up observation."""
    server = Misbehaving(FAULTS["503"])
    try:
        env = make_env("search", "builtin", retriever_url=server.url, timeout=0.3, check_retriever=False)
        env.client.backoff = 0.01
        env.reset(0)
        with pytest.raises(RetrieverError, match="HTTP 503"):
            env.step("<search>veltrano works</search>")
        _, _, _, info = env.step("<answer>1871</answer>")         # the episode itself is still usable
        assert set(INFO_KEYS) <= set(info)
    finally:
        server.close()


# ---------------------------------------------------------------- real benchmarks not installed


def test_real_alfworld_without_its_package_says_how_to_install(monkeypatch, tmp_path):
    from envs.alfworld.real import RealAlfWorld
    monkeypatch.setitem(sys.modules, "textworld", None)             # makes `import textworld` fail
    with pytest.raises(ImportError, match=r"pip install alfworld==0\.4\.2"):
        RealAlfWorld(data_path=str(tmp_path))


def test_real_alfworld_without_game_files_says_where_to_get_them(monkeypatch, tmp_path):
    pytest.importorskip("alfworld", reason="needs pip install alfworld==0.4.2")
    from envs.alfworld.real import RealAlfWorld
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(RuntimeError, match="ALFWORLD_DATA"):
        RealAlfWorld()
    with pytest.raises(RuntimeError, match="alfworld-download"):
        RealAlfWorld(data_path=str(tmp_path / "missing")).reset(0, "train")


def test_real_webshop_with_a_broken_checkout_names_what_to_install(tmp_path, monkeypatch):
    """A checkout whose dependencies are missing (tests/test_env_webshop.py covers no checkout at all)."""
    from envs.webshop.real import RealWebShop
    package = tmp_path / "web_agent_site" / "envs"
    package.mkdir(parents=True)
    (tmp_path / "web_agent_site" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "web_agent_text_env.py").write_text("import gym_is_not_installed_here\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        with pytest.raises(ImportError, match="tools/webshop/install.sh"):
            RealWebShop(webshop_path=str(tmp_path))
    finally:
        for module in [m for m in sys.modules if m.startswith("web_agent_site")]:
            del sys.modules[module]


def test_real_search_without_data_or_server_names_both(tmp_path):
    """No data: one setup error naming Search-R1. No server: the probe at construction names the URL
    (exit 2 before anything loads); with the probe off, the first search names it (exit 1)."""
    from envs.base import EnvSetupError
    from envs.search.real import RealSearchQA
    with pytest.raises(EnvSetupError, match="Search-R1"):
        RealSearchQA(data_path=str(tmp_path / "nq.parquet"))
    (tmp_path / "test.jsonl").write_text('{"question": "who?", "golden_answers": ["me"]}\n')
    kwargs = dict(data_path=str(tmp_path), retriever_url="http://127.0.0.1:9/retrieve", retries=1, backoff=0.01,
                  timeout=1)
    with pytest.raises(EnvSetupError, match="retriever_url: .*127.0.0.1:9.*is running"):
        RealSearchQA(**kwargs)
    env = RealSearchQA(**kwargs, check_retriever=False)
    env.reset(0, split="test")
    with pytest.raises(RetrieverError, match="127.0.0.1:9.*is running"):
        env.step("<search>who</search>")
