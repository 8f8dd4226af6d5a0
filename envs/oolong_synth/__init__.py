"""OolongSynth-v0 (Oolong-Synth): long-context aggregation over documents that do not fit a node's context.

The task's parts, one file each: ``corpus.py`` (label sets, templates, the label oracle),
``document.py`` (the seeded line generator and ranges), ``questions.py`` (question kinds,
exact answers, Oolong's scorer), ``task.py`` (the task and its tools) and ``oracle.py``
(the delegating and flat oracles). Registered in ``rao_envs.envs`` as ``OolongSynth-v0``.
"""

from rao_envs.envs.oolong_synth.corpus import LABEL_SETS, corpus, label_of
from rao_envs.envs.oolong_synth.document import LINE_RE, MAX_LINE_CHARS, DocSpec, Document, build_document
from rao_envs.envs.oolong_synth.oracle import OolongOracle
from rao_envs.envs.oolong_synth.questions import KINDS, PARTIAL_KINDS, ROOT_KINDS, Question, gold, render, score_answer
from rao_envs.envs.oolong_synth.task import CONTEXT_CHARS, RATIOS, OolongSynth

__all__ = [
    "CONTEXT_CHARS", "KINDS", "LABEL_SETS", "LINE_RE", "MAX_LINE_CHARS", "PARTIAL_KINDS", "RATIOS", "ROOT_KINDS",
    "DocSpec", "Document", "OolongOracle", "OolongSynth", "Question", "build_document", "corpus", "gold",
    "label_of", "render", "score_answer",
]
