"""One registry: TaskSpec views, one id regex, override warnings, engine factories, a typed task contract."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from pydantic import BaseModel

import rao_envs
from rao_envs.errors import ConfigError, UnknownTaskError
from rao_envs.registration import engine_factory, parse_task_id, task_spec
from tests.conftest import ProbeTask


@pytest.mark.parametrize(
    "raw, parsed",
    [("Toy-v0", ("Toy", 0)), ("rao_envs/TextCraft-v12", ("TextCraft", 12)), ("My.Task_2-v3", ("My.Task_2", 3))],
)
def test_ids_are_parsed_by_one_regex(raw, parsed):
    assert parse_task_id(raw) == parsed


@pytest.mark.parametrize("bad", ["Toy", "Toy-v", "Toy-vx", "other/Toy-v0", "-v0", "", "Toy-v0 "])
def test_bad_ids_are_typed_errors(bad):
    with pytest.raises(ConfigError, match="must look like 'Name-v0'"):
        rao_envs.register_task(bad, ProbeTask)


def test_every_declared_view_is_registered_after_import():
    for tid in rao_envs.task_ids():
        spec = task_spec(tid)
        assert spec.views["text"] == f"rao_envs/{tid}"
        for gym_id in spec.views.values():
            assert gym_id in gym.registry, gym_id
    assert task_spec("TextCraft-v0").views["discrete"] == "rao_envs/TextCraftDiscrete-v0"
    assert "discrete" not in task_spec("Toy-v0").views


def test_a_task_without_discrete_adapter_says_how_to_add_one():
    from rao_envs.views.discrete import DiscreteRaoEnv

    with pytest.raises(ConfigError, match="no discrete adapter.*register_task"):
        DiscreteRaoEnv("Toy-v0")


def test_overriding_an_id_warns_and_replaces():
    class Probe2(ProbeTask):
        name = "ProbeOverride"

    rao_envs.register_task("ProbeOverride-v0", ProbeTask)
    with pytest.warns(UserWarning, match="overriding the registered task 'ProbeOverride-v0'"):
        rao_envs.register_task("ProbeOverride-v0", Probe2)
    assert task_spec("rao_envs/ProbeOverride-v0").load() is Probe2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rao_envs.register_task("ProbeFresh-v0", ProbeTask)  # a new id: no warning


def test_engine_factory_resolves_once_and_builds_fresh_engines():
    build = engine_factory("Probe-v0", max_depth=2, lam=0.5)
    a, b = build(), build()
    assert a is not b and a.task is not b.task and a.limits.max_depth == 2 and a.lam == 0.5
    with pytest.raises(ConfigError, match="unknown argument 'nope'"):
        engine_factory("Probe-v0", nope=1)
    with pytest.raises(UnknownTaskError):
        engine_factory("Nope-v0")


def test_task_contract_is_declared_on_the_base_class():
    for attr in ("delegate_args_doc", "recommended_max_depth", "instance_model", "system_prompt", "default_limits"):
        assert attr in vars(rao_envs.Task), attr
    assert ProbeTask.max_depth_for("default") == ProbeTask.limits().max_depth


class WordArgs(BaseModel):
    """The typed instance args of the probe."""

    word: str


def test_instance_model_validates_generated_args():
    class Typed(ProbeTask):
        name = "ProbeTyped"
        instance_model = WordArgs

    class Broken(Typed):
        name = "ProbeBroken"

        def generate(self, rng):
            inst = super().generate(rng)
            return inst.model_copy(update={"args": {"word": 5}})

    rao_envs.register_task("ProbeTyped-v0", Typed)
    rao_envs.register_task("ProbeBroken-v0", Broken)
    rao_envs.make_engine("ProbeTyped-v0").reset(0)
    with pytest.raises(TypeError, match="do not match WordArgs"):
        rao_envs.make_engine("ProbeBroken-v0").reset(0)
