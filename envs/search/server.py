"""A small retriever server over the built-in encyclopaedia, speaking both wire formats.

    python -m envs.search.server --port 8000      # then: BuiltinSearchQA(retriever_url=...) or
                                                  #       RealSearchQA(..., retriever_url=...)

POST /retrieve with {"queries": [...], "topk": k, "return_scores": true} (Search-R1) or
{"query": "...", "topk": k} (verl-agent) answers {"result": [[{"document": {"id", "contents"},
"score": s}, ...], ...]}, one list per query ("return_scores": false gives bare documents).
It exists to try the real-benchmark code path (HTTP client, retries) without the 21 M-passage E5 index,
and for the tests. Standard library only, one thread per request.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_TOPK = 50


def answer(retriever, body, default_topk: int) -> dict:
    """The JSON answer for one decoded request body; ValueError when the request is malformed."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    if "queries" in body:
        queries = body["queries"]
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise ValueError("'queries' must be a list of strings")
    elif isinstance(body.get("query"), str):
        queries = [body["query"]]
    else:
        raise ValueError("send 'queries' (a list of strings) or 'query' (a string)")
    topk = body.get("topk", default_topk)
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= MAX_TOPK:
        raise ValueError(f"'topk' must be an integer in 1..{MAX_TOPK}")
    with_scores = bool(body.get("return_scores", True))
    result = []
    for row in retriever.search(queries, topk=topk):
        docs = [{"id": p["id"], "contents": p["contents"]} for p in row]
        result.append([{"document": d, "score": p["score"]} for d, p in zip(docs, row)] if with_scores else docs)
    return {"result": result}


def make_handler(retriever, default_topk: int = 3, verbose: bool = False):
    class RetrieveHandler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path.rstrip("/") != "/retrieve":
                return self._send(404, {"error": "POST to /retrieve"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= MAX_BODY_BYTES:
                    raise ValueError(f"the body must hold 1..{MAX_BODY_BYTES} bytes")
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                self._send(200, answer(retriever, body, default_topk))
            except (ValueError, UnicodeDecodeError) as error:
                self._send(400, {"error": str(error)})

        def do_GET(self):
            self._send(200 if self.path.rstrip("/") in ("", "/health") else 404, {"status": "ok"})

        def _send(self, code: int, payload: dict):
            data = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):
            if verbose:
                super().log_message(format, *args)

    return RetrieveHandler


def make_server(host: str = "127.0.0.1", port: int = 8000, corpus_seed: int = 0, num_people: int = 1000,
                topk: int = 3, verbose: bool = False) -> ThreadingHTTPServer:
    """A server bound to (host, port) over the built-in world; port 0 picks a free port."""
    from envs.search.engine import load_world
    _, retriever = load_world(corpus_seed, num_people)
    server = ThreadingHTTPServer((host, port), make_handler(retriever, topk, verbose))
    server.daemon_threads = True
    return server


def start_in_thread(server: ThreadingHTTPServer) -> str:
    """Serve in a daemon thread; returns the /retrieve URL. Stop with server.shutdown()."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/retrieve"


def main() -> None:
    parser = argparse.ArgumentParser(description="BM25 retriever over the built-in Search-QA world")
    parser.add_argument("--host", default="127.0.0.1", help="loopback by default; 0.0.0.0 exposes it")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--corpus-seed", type=int, default=0)
    parser.add_argument("--num-people", type=int, default=1000)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    server = make_server(args.host, args.port, args.corpus_seed, args.num_people, args.topk, args.verbose)
    print(f"BM25 retriever over the built-in world at http://{args.host}:{server.server_address[1]}/retrieve",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
