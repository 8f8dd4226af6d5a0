"""An OpenAI-compatible chat-completions endpoint as a chat policy (vLLM, SGLang, llama.cpp, Ollama).

Retries transient failures (connection errors, timeouts, 408/409/425/429/5xx, malformed
bodies) with exponential backoff and jitter, then raises :class:`~rao_envs.policies.base.PolicyError`
(the driver marks the node ``infra_error``). Needs ``httpx`` (extra ``rollout``), imported lazily.
"""

from __future__ import annotations

import asyncio
import hashlib
import email.utils
import json
import math
import random
import re
import time
from typing import Any

from rao_envs.errors import ConfigError
from rao_envs.policies.base import Completion, ContextLengthError, NodeInfo, PolicyError

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_TOKEN_ID = re.compile(r"token_id:(\d+)")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


#: how OpenAI, vLLM, SGLang and llama.cpp word a prompt longer than the context (in a 400's body)
_CONTEXT_ERROR = re.compile(
    r"context[ _]length|maximum context|context window|exceeds the available context|n_ctx|too many tokens|prompt is too long",
    re.I,
)


class OpenAIPolicy:
    """An OpenAI-compatible chat-completions endpoint as a policy (needs ``httpx``).

    ``OpenAIPolicy("http://127.0.0.1:8000/v1", "Qwen/Qwen3-0.6B", temperature=1.0)``. Sends
    ``logprobs: true, top_logprobs: 0`` (disable with ``logprobs=False``), a per-request ``seed`` derived from
    the tree seed and node when ``seed`` is given, ``extra_body`` verbatim (e.g.
    ``{"return_token_ids": True}`` for vLLM), and ``X-Rao-Tree``/``X-Rao-Node`` headers
    (ignored by servers; handy for routing and logs). Token ids come from the response
    (vLLM ``token_ids``/``prompt_token_ids`` or ``token_id:N`` tokens) or, for llama.cpp's
    Python server, from its ``/extras/tokenize`` route when the count matches the logprobs.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        temperature: float | None = 1.0,
        top_p: float | None = None,
        max_tokens: int | None = 512,
        logprobs: bool = True,
        seed: int | None = None,
        stop: list[str] | None = None,
        extra_body: dict[str, Any] | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        server_tokenize: bool = True,
        max_connections: int = 256,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, e.g. http://127.0.0.1:8000/v1; got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.params = {k: v for k, v in {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                                          "stop": stop}.items() if v is not None}
        self.logprobs, self.seed = logprobs, seed
        self.extra_body = dict(extra_body or {})
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.headers.update(headers or {})
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.max_retry_after = max_retry_after
        self.max_connections = max_connections
        self._server_tokenize = server_tokenize
        self._client = None
        self._loop = None
        self.calls = self.retried = self.failed = 0
        self.completion_tokens = 0

    def _http(self):
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError('OpenAIPolicy needs httpx: pip install "rao_envs[rollout]"') from None
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self.headers)
            self._loop = loop
        return httpx, self._client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def body(self, messages: list[dict[str, str]], info: NodeInfo | None = None) -> dict[str, Any]:
        """The JSON body of one chat-completions request."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.params}
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 0  # llama.cpp's Python server returns no logprobs without it
        if self.seed is not None and info is not None:
            key = f"{self.seed}:{info.get('seed')}:{info.get('tree_id')}:{info.get('node')}:{info.get('turn')}"
            body["seed"] = _stable_hash(key) % (2**31)
        body.update(self.extra_body)
        return body

    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo | None = None) -> Completion:
        """One chat completion with retries; raises :class:`PolicyError` when it keeps failing."""
        httpx, client = self._http()
        body = self.body(messages, info)
        headers = {}
        if info is not None:
            headers = {"X-Rao-Tree": str(info.get("tree_id", "")), "X-Rao-Node": str(info.get("node", ""))}
        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        retry_after: float | None = None
        self.calls += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random())
                if retry_after is not None:  # the server said when to come back
                    delay = max(delay, min(retry_after, self.max_retry_after))
                await asyncio.sleep(delay)
            retry_after = None
            try:
                async with asyncio.timeout(self.timeout):  # a total deadline: a dripping server cannot hold a request open
                    resp = await client.post(url, json=body, headers=headers)
            except (TimeoutError, httpx.TimeoutException) as exc:
                last = f"no complete answer within {self.timeout}s ({type(exc).__name__})"
                continue
            except httpx.RequestError as exc:  # connection errors, bad Content-Encoding, protocol errors
                kind = "connection error" if isinstance(exc, httpx.TransportError) else "request error"
                last = f"{kind}: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code != 200:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code in TRANSIENT_STATUS or resp.status_code >= 500:
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                    continue
                if resp.status_code == 400 and _CONTEXT_ERROR.search(resp.text[:2000]):
                    self.failed += 1
                    raise ContextLengthError(f"{url}: the prompt exceeds the model's context: {resp.text[:300]}")
                break  # 4xx other than the transient ones: the request itself is wrong
            try:
                out = self._parse(resp.json())
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                last = f"malformed response ({type(exc).__name__}: {exc}): {resp.text[:200]!r}"
                continue
            if out.token_ids is None and out.logprobs and self._server_tokenize:
                try:
                    async with asyncio.timeout(self.timeout):
                        out.token_ids = await self._tokenize(client, out.text, len(out.logprobs))
                except TimeoutError:
                    out.token_ids = None
            self.completion_tokens += len(out.token_ids or out.logprobs or [])
            return out
        self.failed += 1
        raise PolicyError(f"{url}: {last} (after {attempt + 1} attempt(s))")

    @staticmethod
    def _parse(data: dict[str, Any]) -> Completion:
        choice = data["choices"][0]
        msg = choice["message"]
        if not isinstance(msg, dict) or not isinstance(choice, dict):
            raise TypeError(f"choices[0].message is {type(msg).__name__}, not an object")
        text = msg.get("content")
        if not text and msg.get("tool_calls"):
            fn = msg["tool_calls"][0]["function"]
            args = fn.get("arguments")
            text = json.dumps({"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args})
        if not isinstance(text, str):
            if text is None:
                text = ""
            else:
                raise TypeError(f"message content is {type(text).__name__}, not text")
        logprobs = token_ids = None
        content = (choice.get("logprobs") or {}).get("content")
        if content:
            logprobs = [float(e["logprob"]) for e in content]
            if not all(math.isfinite(x) for x in logprobs):
                logprobs = None  # NaN/inf never reach training rows: keep the text and ids only
            ids = [_TOKEN_ID.fullmatch(str(e.get("token", ""))) for e in content]
            if all(ids):
                token_ids = [int(m.group(1)) for m in ids]
        if isinstance(choice.get("token_ids"), list):
            token_ids = [int(t) for t in choice["token_ids"]]
        prompt = data.get("prompt_token_ids") or choice.get("prompt_token_ids")
        if logprobs is not None and token_ids is not None and len(logprobs) != len(token_ids):
            logprobs = None  # misaligned: keep the ids, drop the logprobs
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
        counts = [int(c) if isinstance(c, int) and not isinstance(c, bool) and c >= 0 else None for c in counts]
        return Completion(text, token_ids, logprobs, [int(t) for t in prompt] if prompt else None, choice.get("finish_reason"),
                          counts[0], counts[1])

    async def _tokenize(self, client, text: str, n: int) -> list[int] | None:
        """Ids of ``text`` from llama.cpp's ``/extras/tokenize``, kept only when they match the n logprobs."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            resp = await client.post(f"{root}/extras/tokenize", json={"input": text, "model": self.model})
        except Exception:  # noqa: BLE001 - an optional route: any failure means "not now"
            return None
        if resp.status_code in (404, 405):  # the server has no such route: stop asking
            self._server_tokenize = False
            return None
        try:
            ids = resp.json()["tokens"] if resp.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            ids = None
        if isinstance(ids, list) and len(ids) == n:
            return [int(t) for t in ids]
        return None

