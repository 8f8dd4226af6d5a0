"""TextCraft-v0 placeholder (being written)."""
from rao_envs.task import Task
class TextCraftSynth(Task):
    name = "TextCraft"
