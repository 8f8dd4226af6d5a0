"""DeepSearch-Synth (``DeepSearchSynth-v0``): multi-hop research over a generated encyclopedia.

``world`` builds the seeded world and its pages, ``questions`` the walks, sub-questions and
answer normaliser, ``task`` the task and its tools, ``oracle`` the scripted policies.
"""

from rao_envs.envs.deep_search.questions import answers_match, make_question
from rao_envs.envs.deep_search.task import LEVELS, OPEN_CHARS, DeepSearchSynth, get_index
from rao_envs.envs.deep_search.world import World, build_world, get_world, hop_query

__all__ = [
    "LEVELS", "OPEN_CHARS", "DeepSearchSynth", "World", "answers_match", "build_world", "get_index",
    "get_world", "hop_query", "make_question",
]
