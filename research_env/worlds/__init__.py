"""Synthetic worlds: seeded fictional knowledge bases with multi-hop questions whose answers can only come
from the corpus, for showing that a policy learns to search (see ``ReSearch-Synthetic-v0``)."""

from research_env.worlds.env import SYNTHETIC_ENV_ID, make_synthetic_env
from research_env.worlds.knowledge import RELATIONS, Relation
from research_env.worlds.names import SYLLABLES, spell_out_names, split_syllables
from research_env.worlds.world import SPLITS, World, WorldConfig, cached_world, generate_world, write_world

__all__ = [
    "RELATIONS",
    "SPLITS",
    "SYLLABLES",
    "SYNTHETIC_ENV_ID",
    "Relation",
    "World",
    "WorldConfig",
    "cached_world",
    "generate_world",
    "make_synthetic_env",
    "spell_out_names",
    "split_syllables",
    "write_world",
]
