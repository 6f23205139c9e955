"""Retrievers: a local BM25 index over passages, and an HTTP client for a retriever server.

Both return, per query, a list of passages shaped `{"id": str, "contents": '"Title"\\ntext',
"score": float | None}`, so the episode cannot tell them apart.

Wire formats the client speaks (`wire=`):
- "batched" (Search-R1's server): POST {"queries": [...], "topk": k, "return_scores": true}
  -> {"result": [[{"document": {"id": ..., "contents": ...}, "score": s}, ...], ...]}, one list per query.
- "single" (verl-agent's search tool): POST {"query": "...", "topk": k, "return_scores": true}, one
  request per query, answered in the same shape (a list holding one list, or that list directly).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request

from envs.base import EnvSetupError

DEFAULT_URL = "http://127.0.0.1:8000/retrieve"
MAX_QUERY_CHARS = 2000
PROBE_TIMEOUT = 5.0
_ANSWERED: set[tuple[str, str]] = set()


class RetrieverError(RuntimeError):
    """The retriever could not answer after the allowed retries."""


class BM25Retriever:
    """Lexical search over `passages` (dicts with "id" and "contents") with the `bm25s` package.

    bm25s is imported here, not at package import, so the envs package stays cheap to import.
    Retrieval is guarded by a lock because the HTTP server calls it from several threads.
    """

    def __init__(self, passages: list[dict]):
        try:
            import bm25s
        except ImportError as error:
            raise ImportError("the built-in Search-QA engine needs bm25s: pip install bm25s") from error
        self._bm25s = bm25s
        self.passages = passages
        tokens = bm25s.tokenize([p["contents"] for p in passages], stopwords="en", show_progress=False)
        self.index = bm25s.BM25()
        self.index.index(tokens, show_progress=False)
        self.lock = threading.Lock()

    def search(self, queries: list[str], topk: int = 3) -> list[list[dict]]:
        if not queries:
            return []
        topk = max(1, min(int(topk), len(self.passages)))
        query_tokens = self._bm25s.tokenize([str(q)[:MAX_QUERY_CHARS] for q in queries], stopwords="en",
                                            show_progress=False, return_ids=False)
        with self.lock:
            rows, scores = self.index.retrieve(query_tokens, k=topk, show_progress=False, n_threads=1)
        return [[{"id": self.passages[int(i)]["id"], "contents": self.passages[int(i)]["contents"],
                  "score": float(s)} for i, s in zip(row, score_row)]
                for row, score_row in zip(rows, scores)]


def _passage(item) -> dict:
    """Normalise one returned item: {"document": {...}, "score": s}, or a bare document; documents
    carry "contents", or "title" and "text" as some servers send them."""
    if not isinstance(item, dict):
        raise ValueError(f"a result item is {type(item).__name__}, not an object")
    document = item.get("document", item)
    if not isinstance(document, dict):
        raise ValueError("a result's document is not an object")
    if "contents" in document:
        contents = str(document["contents"])
    elif "text" in document:
        contents = f'"{document.get("title", "")}"\n{document["text"]}'
    else:
        raise ValueError("a document has neither 'contents' nor 'text'")
    score = item.get("score")
    return {"id": str(document.get("id", "")), "contents": contents,
            "score": float(score) if isinstance(score, (int, float)) else None}


def _result_lists(payload, expected: int) -> list[list[dict]]:
    """The per-query passage lists from a decoded answer; ValueError when the shape is wrong."""
    if not isinstance(payload, dict) or not isinstance(payload.get("result"), list):
        raise ValueError("the answer has no 'result' list")
    result = payload["result"]
    if expected == 1 and result and all(isinstance(item, dict) for item in result):
        result = [result]
    if len(result) != expected or not all(isinstance(row, list) for row in result):
        raise ValueError(f"'result' holds {len(result)} lists for {expected} queries")
    return [[_passage(item) for item in row] for row in result]


class RetrieverClient:
    """Talks to a retriever server; retries connection errors, timeouts, HTTP 5xx and malformed
    answers up to `retries` more times with exponential back-off (`backoff`, 2x, 4x ... seconds),
    then raises RetrieverError saying what to check. HTTP 4xx is not retried: the request itself
    is wrong (most often the wire format)."""

    def __init__(self, url: str = DEFAULT_URL, topk: int = 3, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, wire: str = "batched"):
        if wire not in ("batched", "single"):
            raise ValueError(f"wire={wire!r} is unknown; use 'batched' (Search-R1) or 'single' (verl-agent)")
        self.url, self.topk, self.timeout = url, topk, timeout
        self.retries, self.backoff, self.wire = max(0, int(retries)), backoff, wire

    def search(self, queries: list[str], topk: int | None = None) -> list[list[dict]]:
        topk = self.topk if topk is None else topk
        queries = [str(q)[:MAX_QUERY_CHARS] for q in queries]
        if self.wire == "batched":
            return self._post({"queries": queries, "topk": topk, "return_scores": True}, len(queries))
        return [self._post({"query": q, "topk": topk, "return_scores": True}, 1)[0] for q in queries]

    def _post(self, body: dict, expected: int) -> list[list[dict]]:
        data = json.dumps(body).encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return _result_lists(json.loads(raw.decode("utf-8")), expected)
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code}"
                if error.code < 500:
                    raise RetrieverError(self._advice(f"HTTP {error.code} (the request was refused)", 1)) from error
            except (OSError, http.client.HTTPException) as error:
                problem = f"no answer ({getattr(error, 'reason', error)})"
            except (ValueError, UnicodeDecodeError) as error:
                problem = f"a malformed answer ({error})"
        raise RetrieverError(self._advice(problem, self.retries + 1))

    def _advice(self, problem: str, attempts: int) -> str:
        return (f"retriever at {self.url} failed after {attempts} attempt(s): {problem}. Check that the "
                f"server is running and listening on that host and port (the built-in one: "
                f"`python -m envs.search.server --port 8000`), that the path ends in /retrieve, and that "
                f"wire={self.wire!r} matches it ('batched' for Search-R1's server, 'single' for "
                f"verl-agent's).")


def probe_retriever(url: str, wire: str = "batched", timeout: float = PROBE_TIMEOUT) -> None:
    """One small search (top 1, no retry, at most `PROBE_TIMEOUT` seconds) so that a wrong URL or a
    server that is not up shows at start-up, not at the first search of a run. Done once per
    (url, wire) per process: a rollout builds hundreds of envs. EnvSetupError (one line, exit 2)
    names the URL when there is no proper answer."""
    if (url, wire) in _ANSWERED:
        return
    client = RetrieverClient(url, topk=1, timeout=min(timeout, PROBE_TIMEOUT), retries=0, wire=wire)
    try:
        client.search(["probe"])
    except RetrieverError as error:
        raise EnvSetupError(f"retriever_url: {error}") from None
    _ANSWERED.add((url, wire))
