"""A small OpenAI-compatible chat server for tests: it answers from a task's scripted oracle.

Run as a process: ``python tests/openai_server.py --env Toy-v0 [options]``; it binds
127.0.0.1 on a free port and prints ``PORT <n>``. Like a real model it reads only the
conversation, and rebuilds from it the ``NodeInfo`` the oracle reads (:func:`node_info`):
the node's args from its first user message, depth, depth limit and steps left from the
engine's status line, its turn from the assistant messages, its children's results from
their reports, a refusal from the newest message. The ``X-Rao-Tree``/``X-Rao-Node`` headers
only key the oracle's memory, and answers are cached per (tree, node, turn) so a retried request gets the same
answer. Injected failures (``--fail-rate``): the first ``--fail-attempts`` attempts of a
seeded fraction of turns answer with a 500, a stall past the client's timeout, a garbage
body, or a body without choices; more kinds on request (``--fail-kinds``): ``drip`` (a 200 whose
body trickles a few bytes every 0.4 s), ``badmessage`` (``message`` is a string),
``badencoding`` (``Content-Encoding: gzip`` over plain bytes), ``retryafter`` (429 with
``Retry-After: 1``), and ``nanlogprobs``/``huge`` (a normal answer whose logprobs are NaN, or
padded to 5 MB). ``--fail-node ID`` fails every request of that node. ``--max-prompt-chars N``
answers a longer prompt with the 400 a real server sends for a prompt over its context.
``--token-ids`` answers like vLLM with ``return_token_ids`` (character-level ids of a
ChatML rendering, with logprobs), so rows need no tokenizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATUS = re.compile(r"\[node (\S+) \| depth (\d+)/(\d+) \| steps left (-?\d+)/(\d+)")
TOY_EXPR = re.compile(r"Compute the value of (.+?)\. Finish with the number\.")
TC_TARGETS = re.compile(r"Targets \(judged as the increase since you started\): (.+?)\. In the inventory now")
TC_GOAL = re.compile(r"Your Goal: Craft the following items: ([^\n]+)")  # the paper variant's first message
BUDGET = re.compile(r"total budget of (\d+) steps")
#: a child's report in its parent's conversation: finished (with its result), truncated or infra error
CHILD = re.compile(r"^\[sub-agent (\S+?)(?: finished\] (.*)|\] (did not finish)|\] (failed because))", re.M)
IM_START, IM_END = 100_001, 100_002


def node_args(env: str, first_user: str) -> dict[str, Any]:
    """The node's task args, read back from its first user message."""
    if env.startswith("Toy"):
        m = TOY_EXPR.search(first_user)
        return {"expr": m.group(1)} if m else {}
    if env.startswith("TextCraft"):
        m = TC_TARGETS.search(first_user) or TC_GOAL.search(first_user)
        if not m:
            return {}
        targets = {}
        for part in m.group(1).split(", "):
            n, item = part.split("x ", 1)
            targets[item.strip()] = int(n)
        return {"targets": targets}
    return {}


def child_results(messages: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Every child's report in the conversation, as ``NodeInfo.child_results``."""
    out: dict[str, dict[str, Any]] = {}
    for m in messages:
        if m["role"] != "user":
            continue
        for cid, result, truncated, failed in CHILD.findall(m["content"]):
            if truncated or failed:
                out[cid] = {"status": "truncated" if truncated else "infra_error", "result": None}
                continue
            try:
                value: Any = json.loads(result)
            except ValueError:
                value = result
            out[cid] = {"status": "finished", "result": value}
    return out


def node_info(env: str, node: str, messages: list[dict[str, str]], max_depth: int = 0) -> dict[str, Any]:
    """The ``NodeInfo`` of ``node`` as a model could read it from its conversation.

    Without a status line (TextCraft's paper variant states the budget once), the depth comes
    from the node id, steps left from the stated budget and the turn, ``max_depth`` from the server's kwargs.
    """
    last = messages[-1]["content"]
    m = STATUS.search(last)
    results = child_results(messages)
    first = next(x["content"] for x in messages if x["role"] == "user")
    turn = sum(1 for x in messages if x["role"] == "assistant")
    budget = BUDGET.search(first)
    return {
        "node": node,
        "parent": node.rpartition(".")[0] or None,
        "depth": int(m.group(2)) if m else node.count("."),
        "max_depth": int(m.group(3)) if m else max_depth,
        "goal": "",
        "node_args": node_args(env, first),
        "steps_left": int(m.group(4)) if m else (int(budget.group(1)) - turn if budget else 1),
        "turn": turn,
        "children": sorted(results),
        "child_results": results,
        "refused": last.startswith("Refused"),
    }


def chatml_ids(messages: list[dict[str, str]]) -> list[int]:
    """Character-level ids of a ChatML rendering with the generation prompt (tests' tokenizer)."""
    ids: list[int] = []
    for m in messages:
        ids += [IM_START] + [ord(c) for c in f"{m['role']}\n{m['content']}"] + [IM_END] + [ord("\n")]
    return ids + [IM_START] + [ord(c) for c in "assistant\n"]


def _frac(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


class Scripted:
    """The oracle answers, memoised per (tree, node, turn), plus the failure plan."""

    def __init__(self, args: argparse.Namespace) -> None:
        import rao_envs

        self.args = args
        self.engine = rao_envs.make_engine(args.env, **json.loads(args.kw))
        self.oracles: dict[str, Any] = {}
        self.answers: dict[tuple[str, str, int], str] = {}
        self.attempts: dict[tuple[str, str, int], int] = {}
        self.lock = threading.Lock()
        self.requests = 0

    def oracle(self, tree: str):
        if tree not in self.oracles:
            task = self.engine.task
            self.oracles[tree] = task.oracle(delegate=False) if self.args.policy == "flat" else task.oracle()
        return self.oracles[tree]

    def answer(self, tree: str, node: str, messages: list[dict[str, str]]) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        key = (tree, node, turn)
        with self.lock:
            if key in self.answers:
                return self.answers[key]
            info = node_info(self.args.env, node, messages, self.engine.limits.max_depth)
            obs = {"text": messages[-1]["content"], "node": node, "depth": info["depth"]}
            text = self.oracle(tree)(obs, info)
            self.answers[key] = text
            return text

    def failure(self, tree: str, node: str, turn: int) -> str | None:
        """The injected failure for this attempt, if any."""
        a = self.args
        if a.fail_node and node == a.fail_node:
            return "500"
        key = (tree, node, turn)
        with self.lock:
            n = self.attempts[key] = self.attempts.get(key, 0) + 1
            self.requests += 1
        if a.fail_rate <= 0 or n > a.fail_attempts or _frac(f"{tree}|{node}|{turn}") >= a.fail_rate:
            return None
        kinds = a.fail_kinds.split(",")
        return kinds[int(_frac(f"kind|{tree}|{node}|{turn}|{n}") * len(kinds))]


def make_handler(state: Scripted):
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, b'{"error": "not found"}')
                return
            try:
                body = json.loads(raw)
                messages = body["messages"]
            except (ValueError, KeyError):
                self._send(400, b'{"error": "bad request"}')
                return
            if args.max_prompt_chars and sum(len(m.get("content") or "") for m in messages) > args.max_prompt_chars:
                self._send(400, json.dumps({"error": {"message": "This model's maximum context length is "
                                                      f"{args.max_prompt_chars // 4} tokens", "code": "context_length_exceeded"}}).encode())
                return
            tree = self.headers.get("X-Rao-Tree", "default")
            node = self.headers.get("X-Rao-Node") or (STATUS.search(messages[-1]["content"]) or [None, "0"])[1]
            turn = sum(1 for m in messages if m["role"] == "assistant")
            delay = args.latency * (1 + args.jitter * (2 * _frac(f"lat|{tree}|{node}|{turn}|{time.monotonic()}") - 1))
            if delay > 0:
                time.sleep(delay)
            fail = state.failure(tree, node, turn)
            if fail == "500":
                self._send(500, b'{"error": {"message": "injected server error"}}')
                return
            if fail == "timeout":
                time.sleep(args.stall)
                self._send(503, b'{"error": "stalled"}')
                return
            if fail == "garbage":
                self._send(200, b"<html>\x00\x9f not json", "text/html")
                return
            if fail == "nochoices":
                self._send(200, b'{"object": "chat.completion", "choices": []}')
                return
            if fail == "badmessage":
                self._send(200, b'{"object": "chat.completion", "choices": [{"message": "hello"}]}')
                return
            if fail == "retryafter":
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            if fail == "badencoding":
                body_bytes = b'{"not": "gzip at all"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body_bytes)))
                self.end_headers()
                self.wfile.write(body_bytes)
                return
            if fail == "drip":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for _ in range(int(args.stall / 0.4) + 1):  # a few bytes at a time, never the whole body
                        self.wfile.write(b" " * 4)
                        self.wfile.flush()
                        time.sleep(0.4)
                except OSError:
                    pass
                self.close_connection = True
                return
            text = state.answer(tree, node, messages)
            if fail == "huge":
                text = text + " " * 5_000_000
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            out: dict[str, Any] = {"id": "cmpl-test", "object": "chat.completion", "model": body.get("model", "scripted"),
                                   "choices": [choice], "usage": {"prompt_tokens": 0, "completion_tokens": len(text)}}
            if args.token_ids:
                ids = [ord(c) for c in text] + [IM_END]
                choice["token_ids"] = ids
                out["prompt_token_ids"] = chatml_ids(messages)
            if body.get("logprobs") and (args.token_ids or fail == "nanlogprobs"):
                lp = float("nan") if fail == "nanlogprobs" else -0.25
                toks = ids if args.token_ids else [ord(c) for c in text]
                choice["logprobs"] = {"content": [{"token": chr(i) if i < 100_000 else "<|im_end|>", "logprob": lp,
                                                   "bytes": None, "top_logprobs": []} for i in toks]}
            self._send(200, json.dumps(out).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Parse options, bind 127.0.0.1:0, print the port, serve until killed."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--env", default="Toy-v0")
    p.add_argument("--kw", default="{}", help="make() kwargs as JSON")
    p.add_argument("--policy", choices=("oracle", "flat"), default="oracle")
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0, help="relative latency jitter in [0, 1]")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--fail-attempts", type=int, default=1)
    p.add_argument("--fail-kinds", default="500,timeout,garbage,nochoices")
    p.add_argument("--fail-node", default="")
    p.add_argument("--stall", type=float, default=2.0, help="seconds an injected timeout stalls")
    p.add_argument("--token-ids", action="store_true")
    p.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    p.add_argument("--max-prompt-chars", type=int, default=0, help="answer longer prompts with a context-length 400")
    args = p.parse_args(argv)
    sys.path.insert(0, ".")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Scripted(args)))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
