"""Built-in tasks (import path ``rao_envs.envs``). One task, one file; each registers itself."""

from rao_envs.registration import register_task

register_task("Toy-v0", "rao_envs.envs.toy:ToyArithmetic")
register_task("TextCraft-v0", "rao_envs.envs.textcraft:TextCraftSynth")
