"""Views over the engine: Gymnasium (one active node), PettingZoo (live nodes = agents)."""
