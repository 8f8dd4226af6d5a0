"""Built-in tasks (import path ``rao_envs.envs``). One task, one file or folder; registered here.

Each ``register_task`` names the task class and every view it supports beyond the text views
(``discrete=`` its discrete adapter), so ``gymnasium.make`` works right after ``import rao_envs``.
"""

from rao_envs.registration import register_task

register_task("Toy-v0", "rao_envs.envs.toy:ToyArithmetic")
register_task(
    "TextCraft-v0",
    "rao_envs.envs.textcraft.task:TextCraftSynth",
    discrete="rao_envs.envs.textcraft.discrete:TextCraftAdapter",
)
register_task("OolongSynth-v0", "rao_envs.envs.oolong_synth.task:OolongSynth")
register_task("DeepSearchSynth-v0", "rao_envs.envs.deep_search.task:DeepSearchSynth")
register_task("CodeSynth-v0", "rao_envs.envs.code_synth.task:CodeSynth")
