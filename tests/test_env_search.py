"""Search-QA: built-in engine, parsing, prompts, HTTP retriever (both wire formats, faults), real adapter."""

import json
import os
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from envs import make_env
from envs.base import INFO_KEYS, EnvSetupError
from envs.search import SKILL_CATEGORIES, skill_category
from envs.search.engine import BuiltinSearchQA
from envs.search.prompts import FORMAT_REMINDER, parse_action, render_prompt, split_action
from envs.search.qa import exact_match, normalize_answer
from envs.search.real import RealSearchQA
from envs.search.retriever import RetrieverClient, RetrieverError
from envs.search.server import make_server, start_in_thread


@pytest.fixture(scope="module")
def env():
    return BuiltinSearchQA()


@pytest.fixture(scope="module")
def server_url():
    server = make_server(port=0)
    url = start_in_thread(server)
    yield url
    server.shutdown()
    server.server_close()


def play(env, actions):
    """Run canonical actions from the current state; returns (observations, rewards, dones, infos)."""
    trace = []
    for action in actions:
        obs, reward, done, info = env.step(action)
        trace.append((obs, reward, done, info))
        if done:
            break
    return trace


def run_expert(env, split, index):
    env.reset(seed=0, split=split, task_index=index)
    plan = env.privileged()["expert_plan"]
    return env.privileged(), play(env, plan)


# ---------------------------------------------------------------- built-in engine


def test_expert_plan_wins_every_sampled_question(env):
    rng = random.Random(0)
    panel = [("test", i) for i in range(len(env.questions["test"]))]
    panel += [("train", i) for i in rng.sample(range(len(env.questions["train"])), 400)]
    for split, index in panel:
        privileged, trace = run_expert(env, split, index)
        obs, reward, done, info = trace[-1]
        assert done and reward == 1.0 and info["won"] and info["score"] == 1.0, (split, index, privileged)
        searches = [t[0] for t in trace[:-1]]
        assert len(searches) == len(privileged["supporting_titles"]) <= env.max_steps - 1
        for observation, title in zip(searches, privileged["supporting_titles"]):
            assert observation.startswith("<information>") and f"(Title: {title})" in observation
        gold = normalize_answer(privileged["gold_answers"][0])
        assert any(gold in normalize_answer(observation) for observation in searches)


def test_random_answers_rarely_win(env):
    rng = random.Random(1)
    world = env.world
    guesses = ([p["name"] for p in world.people] + [c["name"] for c in world.cities]
               + [str(year) for year in range(1600, 2025)] + [o["name"] for o in world.orgs])
    wins = 0
    for index in rng.sample(range(len(env.questions["train"])), 400):
        env.reset(seed=0, split="train", task_index=index)
        _, reward, done, _ = env.step(f"<answer>{rng.choice(guesses)}</answer>")
        assert done
        wins += reward
    assert wins / 400 < 0.05


def test_four_turn_limit_and_steps_after_done(env):
    env.reset(seed=3, split="train")
    trace = play(env, ["<search>anything</search>", "not an action", "<search>more</search>", "<search>x</search>"])
    assert [t[2] for t in trace] == [False, False, False, True]
    assert [t[3]["step"] for t in trace] == [1, 2, 3, 4]
    assert all(t[1] == 0.0 for t in trace) and not trace[-1][3]["won"]
    obs, reward, done, info = env.step("<answer>late</answer>")
    assert done and reward == 0.0 and info["step"] == 4 and info["answer"] == ""


def test_invalid_action_changes_nothing_but_the_turn(env):
    env.reset(seed=5, split="test")
    gold = env.privileged()["gold_answers"][0]
    for bad in ["", "<search></search>", "<search>a</search><answer>b</answer>", "plain text", None]:
        obs, reward, done, info = env.step(bad)
        assert obs == FORMAT_REMINDER and reward == 0.0 and not info["valid_action"]
        if done:
            break
    env.reset(seed=5, split="test")
    _, reward, done, info = env.step(f"<answer>{gold}</answer>")
    assert reward == 1.0 and done and info["step"] == 1


def test_same_seed_same_question_and_fixed_panel(env):
    ids = []
    for seed in range(30):
        _, first = env.reset(seed=seed, split="train")
        _, again = BuiltinSearchQA().reset(seed=seed, split="train")
        assert first["task_id"] == again["task_id"] and first["task_description"] == again["task_description"]
        ids.append(first["task_id"])
    assert len(set(ids)) > 20
    _, a = env.reset(seed=1, split="valid_seen", task_index=7)
    _, b = env.reset(seed=99, split="eval", task_index=7)
    assert a["task_id"] == b["task_id"] == "search/test/" + env.questions["test"][7].qid
    with pytest.raises(ValueError):
        env.reset(seed=0, split="nonsense")


def test_splits_are_disjoint_balanced_and_keyword_rules_agree(env):
    train = {q.text for q in env.questions["train"]}
    test = [q.text for q in env.questions["test"]]
    assert len(test) == 512 and not train & set(test)
    first = [q.task_type for q in env.questions["test"][:128]]
    assert {t: first.count(t) for t in SKILL_CATEGORIES} == {t: 32 for t in SKILL_CATEGORIES}
    for q in env.questions["train"] + env.questions["test"]:
        assert skill_category(q.text) == q.task_type, q.text


def test_verification_drops_a_plan_whose_search_misses(env):
    from envs.search.engine import verified
    from envs.search.questions import Candidate
    one, other = env.questions["test"][0], env.questions["test"][1]
    hit = Candidate("hit", ("a",), "direct_retrieval", [(one.plan_queries[0], one.support_ids[0])], ())
    miss = Candidate("miss", ("a",), "multi_hop", [(one.plan_queries[0], one.support_ids[0]),
                                                   (other.plan_queries[0], one.support_ids[0])], ())
    assert [c.text for c in verified([hit, miss], env.retriever, topk=3)] == ["hit"]


def test_world_is_the_same_in_another_process():
    code = ("from envs.search.engine import BuiltinSearchQA; e = BuiltinSearchQA(); "
            "print([(q.text, q.answers) for q in e.questions['test'][:50]] + [e.world.passages[1234]])")
    outputs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1000


def test_info_and_privileged_keys(env):
    _, info = env.reset(seed=11, split="train")
    assert set(INFO_KEYS) <= set(info) and info["admissible_actions"] == [] and info["step"] == 0
    privileged = env.privileged()
    assert privileged["skill_category"] in SKILL_CATEGORIES and privileged["task_type"] == info["task_type"]
    assert privileged["gold_answers"] and privileged["expert_plan"][-1].startswith("<answer>")
    for action in ["<search>q</search>", "junk", "<answer>x</answer>"]:
        _, _, _, info = env.step(action)
        assert set(INFO_KEYS) <= set(info)


def test_make_env_registry_builds_the_builtin_engine():
    built = make_env("search", "builtin")
    assert built.name == "search" and built.max_steps == 4


# ---------------------------------------------------------------- answers, parsing, prompts


@pytest.mark.parametrize("text, normal", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  A   cat,  an\tapple ", "cat apple"),
    ("U.S.A.", "usa"),
    ("48,000", "48000"),
    ("Theatre of the Absurd", "theatre of absurd"),
    ("", ""),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match():
    assert exact_match("the  Ombra river.", ["Ombra River", "Ombra"]) == 1.0
    assert exact_match("Ombra", ["Ombra River", "Ombra"]) == 1.0
    assert exact_match("Ombra Rivers", ["Ombra River"]) == 0.0
    assert exact_match("anything", []) == 0.0


@pytest.mark.parametrize("response, action, valid", [
    ("<think>look it up</think><search>  Ilsa   Morvandt born </search>", "<search>Ilsa Morvandt born</search>", True),
    ("<think>known</think>\n<answer>1843</answer>", "<answer>1843</answer>", True),
    ("<answer>1843</answer> and no think", "<answer>1843</answer>", True),
    ("<search>a</search><answer>b</answer>", "", False),
    ("<think>I will just talk</think>", "", False),
    ("<search>a</search><search>b</search>", "", False),
    ("<answer>a</answer> then <answer>b</answer>", "", False),
    ("<search>   </search>", "", False),
    ("<answer></answer>", "", False),
    ("<answer>北京</answer>", "", False),
    ("<think>答案</think><answer>Paris</answer>", "", False),
    ("</search>reversed<search>", "", False),
    ("<search>never closed", "", False),
    ("<search>a <answer>b</search>", "", False),
])
def test_parse_action(response, action, valid):
    assert parse_action(response) == (action, valid)


def test_parse_action_on_huge_and_odd_text():
    huge = "<search>" * 200_000 + "x" * 1_000_000
    assert parse_action(huge) == ("", False)
    long_query = "<search>" + "word " * 100_000 + "</search>"
    action, valid = parse_action(long_query)
    assert valid and len(action) <= 300 + len("<search></search>")
    assert parse_action(None) == ("", False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("<>/searchnwt \n\x00é中") + ["<search>", "</search>", "<answer>", "</answer>",
                                                                  "<think>"]), max_size=30).map("".join))
def test_parse_and_step_never_raise(text):
    action, valid = parse_action(text)
    assert valid == (split_action(action) is not None)
    episode = BuiltinSearchQA()
    episode.reset(seed=0)
    for candidate in (action, text):
        _, reward, _, info = episode.step(candidate)
        assert reward in (0.0, 1.0) and set(INFO_KEYS) <= set(info)


@settings(max_examples=200, deadline=None)
@given(observation=st.text(max_size=50),
       history=st.lists(st.one_of(st.tuples(st.text(max_size=20), st.text(max_size=20)), st.text(max_size=5),
                                  st.none(), st.integers()), max_size=6),
       info=st.one_of(st.none(), st.dictionaries(st.sampled_from(["task_description", "step"]),
                                                 st.one_of(st.text(max_size=10), st.integers(), st.none()))),
       history_length=st.one_of(st.integers(-3, 10), st.none(), st.text(max_size=3)))
def test_render_prompt_never_raises(observation, history, info, history_length):
    assert isinstance(render_prompt(observation, history, info, history_length), str)


def test_render_prompt_contents(env):
    obs, info = env.reset(seed=2, split="train")
    history = []
    for action in ["<search>first query</search>", "<search>second query</search>", "<search>third query</search>"]:
        new_obs, _, _, info = env.step(action)
        history.append((obs, action))
        obs = new_obs
    prompt = env.render_prompt(obs, history, info, history_length=2)
    assert info["task_description"] in prompt and "Turn 4 of 4" in prompt and "last turn" in prompt
    assert "first query" not in prompt and "second query" in prompt and "third query" in prompt
    assert "<think>" in prompt and "<search>" in prompt and "<answer>" in prompt
    assert prompt.count("Doc 1 (Title:") == 3 and obs in prompt   # two earlier results and the current one
    assert "Earlier turns" not in env.render_prompt(obs, history, info, history_length=0)


@pytest.mark.parametrize("question, category", [
    ("Which magazine was started first, Arthur's Magazine or First for Women?", "comparison"),
    ("Were Scott Derrickson and Ed Wood of the same nationality?", "comparison"),
    ("Who is the father of the director of film Polish-Russian War?", "multi_hop"),
    ("What is the birthplace of the performer whose album was released in 1998?", "multi_hop"),
    ("When did the first episode of Friends air?", "attribute_lookup"),
    ("How many players are on a rugby union team?", "attribute_lookup"),
    ("Who sang I Will Always Love You?", "direct_retrieval"),
    ("What is the capital of Chile?", "direct_retrieval"),
])
def test_keyword_rule_on_real_style_questions(question, category):
    assert skill_category(question) == category


# ---------------------------------------------------------------- HTTP retriever


@pytest.mark.parametrize("wire", ["batched", "single"])
def test_client_against_builtin_server(env, server_url, wire):
    client = RetrieverClient(server_url, topk=3, wire=wire, timeout=10)
    questions = env.questions["test"][:6]
    queries = [q.plan_queries[0] for q in questions]
    results = client.search(queries)
    assert len(results) == len(queries)
    for question, row, local in zip(questions, results, env.retriever.search(queries, topk=3)):
        assert [p["id"] for p in row] == [p["id"] for p in local]
        assert question.support_ids[0] in {p["id"] for p in row}
        assert all(p["contents"].startswith('"') and isinstance(p["score"], float) for p in row)


@pytest.mark.parametrize("wire", ["batched", "single"])
def test_builtin_env_through_server_matches_local_search(env, server_url, wire):
    remote = BuiltinSearchQA(retriever_url=server_url, wire=wire, timeout=10)
    for index in range(0, 40, 5):
        privileged, trace = run_expert(env, "test", index)
        remote.reset(seed=0, split="test", task_index=index)
        remote_trace = play(remote, privileged["expert_plan"])
        assert [t[:3] for t in remote_trace] == [t[:3] for t in trace] and remote_trace[-1][1] == 1.0


class FaultServer:
    """A local server that misbehaves in one chosen way and counts the requests it got."""

    def __init__(self, mode, failures=10**6):
        self.mode, self.failures, self.calls, self.release = mode, failures, 0, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if outer.calls > outer.failures:
                    return self._reply(200, json.dumps({"result": [[{"document": {"id": "1", "contents": '"T"\nok'},
                                                                     "score": 1.0}]]}))
                if outer.mode == "hang":
                    outer.release.wait(5)
                    return
                if outer.mode == "500":
                    return self._reply(500, "boom")
                if outer.mode == "400":
                    return self._reply(400, "bad request")
                return self._reply(200, '{"result": [[{"document": ')

            def _reply(self, code, text):
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = start_in_thread(self.server)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["500", "hang", "malformed"])
def test_client_retries_then_raises_naming_the_url(mode):
    fault = FaultServer(mode)
    try:
        client = RetrieverClient(fault.url, timeout=0.2, retries=2, backoff=0.01)
        with pytest.raises(RetrieverError, match=fault.url.replace(".", r"\.")) as caught:
            client.search(["q"])
        assert fault.calls == 3 and "3 attempt" in str(caught.value) and "wire" in str(caught.value)
    finally:
        fault.close()


def test_client_does_not_retry_a_refused_request():
    fault = FaultServer("400")
    try:
        with pytest.raises(RetrieverError, match="HTTP 400"):
            RetrieverClient(fault.url, retries=3, backoff=0.01).search(["q"])
        assert fault.calls == 1
    finally:
        fault.close()


def test_client_recovers_after_transient_failures():
    fault = FaultServer("500", failures=2)
    try:
        result = RetrieverClient(fault.url, retries=3, backoff=0.01, wire="single").search(["q"])
        assert fault.calls == 3 and result[0][0]["contents"] == '"T"\nok'
    finally:
        fault.close()


def test_client_on_a_closed_port():
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{probe.server_address[1]}/retrieve"
    probe.server_close()
    with pytest.raises(RetrieverError, match="is running"):
        RetrieverClient(url, retries=1, backoff=0.01, timeout=1).search(["q"])


# ---------------------------------------------------------------- real adapter


def real_rows(env):
    rows = []
    for i, q in enumerate(env.questions["test"][:12]):
        row = {"id": f"row{i}", "question": q.text.rstrip("?"), "data_source": "nq" if i % 2 else "hotpotqa"}
        if i % 3:
            row["golden_answers"] = list(q.answers)
        else:
            row["reward_model"] = {"style": "rule", "ground_truth": {"target": list(q.answers)}}
        rows.append(row)
    return rows


def check_real_env(real, env):
    """The train split keeps the file's order; the test split alternates its two sources (a stratified panel)."""
    assert len(real.questions["train"]) == 12 and real.questions["train"][4].qid == "row4"
    assert [q.task_type for q in real.questions["test"]] == ["hotpotqa", "nq"] * 6
    index = [q.qid for q in real.questions["test"]].index("row4")
    _, info = real.reset(seed=0, split="test", task_index=index)
    assert info["task_type"] == info["data_source"] == "hotpotqa" and info["task_id"] == "search/test/row4"
    assert info["task_description"].endswith("?") and set(INFO_KEYS) <= set(info)
    privileged = real.privileged()
    assert privileged["gold_answers"] == list(env.questions["test"][4].answers)
    obs, _, done, _ = real.step(f"<search>{env.questions['test'][4].plan_queries[0]}</search>")
    assert obs.startswith("<information>") and not done
    _, reward, done, info = real.step(privileged["expert_plan"][-1])
    assert reward == 1.0 and done and info["won"]


def test_real_adapter_on_jsonl(tmp_path, env, server_url):
    with open(tmp_path / "train.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in real_rows(env))
    (tmp_path / "test.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    check_real_env(RealSearchQA(data_path=str(tmp_path), retriever_url=server_url, timeout=10), env)
    only_nq = RealSearchQA(data_path=str(tmp_path / "train.jsonl"), retriever_url=server_url, data_sources=["nq"])
    assert {q.task_type for q in only_nq.questions["test"]} == {"nq"}


def test_real_adapter_on_parquet(tmp_path, env, server_url):
    pa = pytest.importorskip("pyarrow", reason="reading Search-R1 parquet files needs pyarrow")
    import pyarrow.parquet as pq
    path = str(tmp_path / "data.parquet")
    rows = real_rows(env)
    columns = ("id", "question", "data_source", "golden_answers", "reward_model")
    pq.write_table(pa.Table.from_pydict({c: [row.get(c) for row in rows] for c in columns}), path)
    check_real_env(make_env("search", "real", data_path=path, retriever_url=server_url, timeout=10), env)


def test_real_adapter_on_search_r1_custom_dataset_layout(tmp_path):
    """Search-R1 README's own-dataset rows: data_source, prompt (chat messages), ability, reward_model,
    extra_info; no question column. The question comes from the prompt; a file with no usable row is a
    setup error in one line (before the retriever is probed, so before any model loads)."""
    pa = pytest.importorskip("pyarrow", reason="reading Search-R1 parquet files needs pyarrow")
    import pyarrow.parquet as pq
    prefix = "Answer the given question. Search with <search> query </search>. Question: "
    rows = [{"data_source": "nq", "prompt": [{"role": "user", "content": prefix + "who wrote hamlet\n"}],
             "ability": "fact-reasoning",
             "reward_model": {"style": "rule", "ground_truth": {"target": ["Shakespeare"]}},
             "extra_info": {"split": "train", "index": 0}},
            {"data_source": "hotpotqa", "prompt": [{"role": "user", "content": "What is the capital of France"}],
             "ability": "fact-reasoning", "reward_model": {"style": "rule", "ground_truth": {"target": ["Paris"]}},
             "extra_info": {"split": "train", "index": 1}}]
    path = str(tmp_path / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    real = RealSearchQA(data_path=path, check_retriever=False)
    assert [(q.text, q.answers, q.task_type) for q in real.questions["train"]] == [
        ("who wrote hamlet?", ("Shakespeare",), "nq"), ("What is the capital of France?", ("Paris",), "hotpotqa")]
    with pytest.raises(EnvSetupError, match=r"no question of data_sources \['popqa'\] loaded from .*train.parquet"):
        RealSearchQA(data_path=path, data_sources=["popqa"])
    empty = str(tmp_path / "empty.parquet")
    pq.write_table(pa.Table.from_pylist([{"data_source": "nq", "answer": "x"}]), empty)
    with pytest.raises(EnvSetupError, match="no question loaded from"):
        RealSearchQA(data_path=empty, retriever_url="http://127.0.0.1:9/retrieve")


def test_a_dataset_without_questions_stops_train_at_setup(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow", reason="reading Search-R1 parquet files needs pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"data_source": "nq", "ability": "qa"}]), str(tmp_path / "train.parquet"))
    from train import main
    env_kwargs = json.dumps({"data_path": str(tmp_path), "check_retriever": False})
    code = main(["--env_name", "search", "--env_backend", "real", "--env_kwargs", env_kwargs, "--dry_run", "true",
                 "--preset", "paper", "--output_dir", str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: data_path: no question loaded from")


def test_real_adapter_reports_a_missing_path():
    with pytest.raises(EnvSetupError, match="data_path"):
        RealSearchQA(data_path="/nonexistent/search_r1.parquet")
