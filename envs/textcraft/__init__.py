"""TextCraft-v0 (TextCraft-Synth): craft items in a procedural recipe world, delegating sub-items.

The task's parts, one file each: ``task.py`` (the world, the task, its tools and oracle) and
``discrete.py`` (the discrete-view adapter and its rule policy). Registered in
``rao_envs.envs`` as ``TextCraft-v0`` and ``TextCraftDiscrete-v0``.
"""

from rao_envs.envs.textcraft.task import *  # noqa: F401,F403
from rao_envs.envs.textcraft.task import _build_world  # noqa: F401  (tests build worlds with other sizes)
