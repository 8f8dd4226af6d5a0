"""Several OpenAI-compatible endpoints serving one model, balanced, with dead ones taken out.

:class:`BalancedPolicy` is a chat policy like :class:`~rao_envs.policies.OpenAIPolicy` (it
holds one per base URL) that sends each request to the healthy endpoint with the fewest
requests in flight. When a request fails after that endpoint's own retries, the endpoint is
probed (``GET /models``): if the probe fails too, the endpoint is **taken out of the balance**
and the request goes to another one; it is probed again every ``probe_interval`` seconds and
comes back when it answers. If the probe succeeds, the failure was the request's, and it is
raised as usual (the node becomes ``infra_error``, as with one endpoint). While every endpoint
is down a request waits up to ``wait_for_endpoint`` seconds for one to come back.

Needs no Ray: use it with the local driver too. Needs ``httpx`` (extra ``rollout``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from rao_envs.errors import ConfigError
from rao_envs.policies.base import Completion, NodeInfo, PolicyError
from rao_envs.policies.openai import OpenAIPolicy


@dataclass
class EndpointState:
    """Health and load of one endpoint of a :class:`BalancedPolicy`."""

    url: str
    policy: OpenAIPolicy
    in_flight: int = 0
    up: bool = True
    down_since: float | None = None
    next_probe: float = 0.0
    served: int = 0
    failures: int = 0
    outages: int = 0
    last_error: str | None = None
    _probe: Any = field(default=None, repr=False)


class BalancedPolicy:
    """One model behind several OpenAI-compatible base URLs, balanced by load (module docstring).

    ``BalancedPolicy(["http://gpu0:8000/v1", "http://gpu1:8000/v1"], "Qwen/Qwen3-8B", temperature=1.0)``;
    every other keyword goes to each :class:`~rao_envs.policies.OpenAIPolicy`. Picklable before
    first use (what Ray does when it ships the policy to rollout workers).
    """

    def __init__(
        self,
        base_urls: list[str] | tuple[str, ...] | str,
        model: str | None = None,
        *,
        template: OpenAIPolicy | None = None,
        probe_interval: float = 5.0,
        probe_timeout: float = 5.0,
        wait_for_endpoint: float = 60.0,
        **openai_kwargs: Any,
    ) -> None:
        if isinstance(base_urls, str):
            base_urls = base_urls.split(",")
        urls = [u.strip().rstrip("/") for u in base_urls if u.strip()]
        if not urls:
            raise ConfigError("BalancedPolicy needs at least one base URL, e.g. ['http://127.0.0.1:8000/v1']")
        if len(set(urls)) != len(urls):
            raise ConfigError(f"BalancedPolicy got the same base URL twice: {urls}")
        if template is None:
            if model is None:
                raise ConfigError("BalancedPolicy needs the model name (or template=an OpenAIPolicy)")
            template = OpenAIPolicy(urls[0], model, **openai_kwargs)
        self.template = _fresh(template)
        self.model = template.model
        self.probe_interval, self.probe_timeout, self.wait_for_endpoint = probe_interval, probe_timeout, wait_for_endpoint
        self.endpoints = [EndpointState(u, _fresh(template, u)) for u in urls]
        self._rr = 0
        self._changed: asyncio.Event | None = None
        self._loop = None

    @classmethod
    def from_policy(cls, policy: OpenAIPolicy, base_urls: list[str] | str, **kwargs: Any) -> BalancedPolicy:
        """The same client settings as ``policy`` (model, sampling, retries, headers), over ``base_urls``."""
        return cls(base_urls, template=policy, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only: each process that unpickles the policy starts with fresh clients and health."""
        return {"base_urls": [e.url for e in self.endpoints], "template": self.template, "probe_interval": self.probe_interval,
                "probe_timeout": self.probe_timeout, "wait_for_endpoint": self.wait_for_endpoint}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["base_urls"], template=state["template"], probe_interval=state["probe_interval"],
                      probe_timeout=state["probe_timeout"], wait_for_endpoint=state["wait_for_endpoint"])

    # ----- health
    @property
    def healthy(self) -> list[str]:
        """Base URLs currently in the balance."""
        return [e.url for e in self.endpoints if e.up]

    def stats(self) -> list[dict[str, Any]]:
        """Per endpoint: url, up, in_flight, served, failures, outages, last_error."""
        return [{"url": e.url, "up": e.up, "in_flight": e.in_flight, "served": e.served, "failures": e.failures,
                 "outages": e.outages, "last_error": e.last_error} for e in self.endpoints]

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:
            self._changed, self._loop = asyncio.Event(), loop
        return self._changed

    async def probe(self, ep: EndpointState) -> bool:
        """True when ``GET {base_url}/models`` answers 200 within ``probe_timeout``."""
        _, client = ep.policy._http()
        try:
            async with asyncio.timeout(self.probe_timeout):
                resp = await client.get(f"{ep.url}/models", headers=ep.policy.headers)
            return resp.status_code == 200
        except Exception:  # noqa: BLE001 - any failure means "not up"
            return False

    def _mark_down(self, ep: EndpointState, why: str) -> None:
        if ep.up:
            ep.up, ep.down_since = False, time.monotonic()
            ep.outages += 1
        ep.last_error = why
        ep.next_probe = time.monotonic() + self.probe_interval
        self._watch(ep)

    def _watch(self, ep: EndpointState) -> None:
        """Make sure a down endpoint has a re-probe running in this event loop."""
        loop = asyncio.get_running_loop()
        task = ep._probe
        if task is None or task.done() or task.get_loop() is not loop:
            ep._probe = loop.create_task(self._reprobe(ep))

    async def _reprobe(self, ep: EndpointState) -> None:
        """Probe a down endpoint every ``probe_interval`` s until it answers, then put it back."""
        while not ep.up:
            await asyncio.sleep(max(0.0, ep.next_probe - time.monotonic()))
            if await self.probe(ep):
                ep.up, ep.down_since = True, None
                self._event().set()
                return
            ep.next_probe = time.monotonic() + self.probe_interval

    def _pick(self, exclude: set[str]) -> EndpointState | None:
        live = [e for e in self.endpoints if e.up and e.url not in exclude]
        if not live:
            return None
        least = min(e.in_flight for e in live)
        ties = [e for e in live if e.in_flight == least]
        self._rr += 1
        return ties[self._rr % len(ties)]

    # ----- the policy
    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo | None = None) -> Completion:
        """One chat completion on the least-loaded healthy endpoint; fails over when an endpoint is down."""
        for ep in self.endpoints:
            if not ep.up:
                self._watch(ep)  # e.g. a new asyncio.run: the last loop's probes are gone
        tried: set[str] = set()
        deadline = time.monotonic() + self.wait_for_endpoint
        last = "no endpoint tried"
        while True:
            ep = self._pick(tried)
            if ep is None:  # every endpoint is down (or was tried and went down): wait for one to come back
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PolicyError(f"no endpoint up within {self.wait_for_endpoint}s ({last}); "
                                      f"endpoints: {[e.url for e in self.endpoints]}")
                event = self._event()
                event.clear()
                if not self.healthy:
                    try:
                        async with asyncio.timeout(min(left, self.probe_interval)):
                            await event.wait()
                    except TimeoutError:
                        pass
                tried = {u for u in tried if u not in self.healthy}  # a recovered endpoint may be tried again
                continue
            tried.add(ep.url)
            ep.in_flight += 1
            try:
                out = await ep.policy(messages, info)
            except PolicyError as exc:
                ep.failures += 1
                last = f"{ep.url}: {exc}"
                if await self.probe(ep):
                    ep.last_error = str(exc)
                    raise
                self._mark_down(ep, str(exc))
                continue
            finally:
                ep.in_flight -= 1
            ep.served += 1
            return out

    async def aclose(self) -> None:
        """Close every endpoint's HTTP connection pool and stop the probes."""
        for ep in self.endpoints:
            if ep._probe is not None:
                ep._probe.cancel()
            await ep.policy.aclose()


def _fresh(policy: OpenAIPolicy, base_url: str | None = None) -> OpenAIPolicy:
    """A copy of ``policy`` (optionally at another base URL) with no HTTP client and zeroed counters."""
    import copy

    out = copy.copy(policy)
    out.headers, out.params, out.extra_body = dict(policy.headers), dict(policy.params), dict(policy.extra_body)
    if base_url is not None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, e.g. http://127.0.0.1:8000/v1; got {base_url!r}")
        out.base_url = base_url
    out._client = out._loop = None
    out.calls = out.retried = out.failed = 0
    out.completion_tokens = 0
    return out
