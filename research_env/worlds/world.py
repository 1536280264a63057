"""A whole synthetic world from one seed: three knowledge bases with disjoint entities (train, dev, test),
one shared corpus of their passages, and each split's questions, written as raw MuSiQue JSONL plus a
JsonCollection corpus. Same configuration, same bytes; the cached copy is built once per configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from research_env.corpus import passage_contents
from research_env.retrieval.bm25 import cache_root
from research_env.staging import staged_directory
from research_env.worlds.knowledge import RELATION_BY_NAME, build_knowledge_base, template_words
from research_env.worlds.names import NameSource
from research_env.worlds.questions import sample_questions

#: Bump whenever a change to the generator changes its output, so that cached worlds are rebuilt.
GENERATOR_VERSION = 3
SPLITS = ("train", "dev", "test")
#: Share of the entities that each split's knowledge base gets.
SPLIT_SHARES = {"train": 0.6, "dev": 0.2, "test": 0.2}
CORPUS_FILE, INFO_FILE = "corpus.jsonl", "world.json"


def parse_hops(hops: int | str | Iterable[int]) -> tuple[int, ...]:
    """Hop counts from ``2``, ``"1-3"``, ``range(1, 4)`` or ``[1, 2]``; each must be 1 to 4."""
    if isinstance(hops, str):
        low, _, high = hops.partition("-")
        values = tuple(range(int(low), int(high or low) + 1))
    elif isinstance(hops, int | np.integer):
        values = (int(hops),)
    else:
        values = tuple(sorted({int(h) for h in hops}))
    if not values or not all(1 <= h <= 4 for h in values):
        raise ValueError(f"hops must be 1 to 4 (an int, 'LOW-HIGH', a range or a list), got {hops!r}")
    return values


@dataclass(frozen=True)
class WorldConfig:
    """What a synthetic world is made of. ``num_questions`` is per split; ``num_entities`` is the total over
    the three splits (a world has about 1.7 passages per entity)."""

    seed: int = 0
    hops: tuple[int, ...] = (1,)
    num_questions: int = 500
    num_entities: int = 3000

    def __post_init__(self) -> None:
        object.__setattr__(self, "hops", parse_hops(self.hops))
        if self.num_questions < 1:
            raise ValueError(f"num_questions must be >= 1, got {self.num_questions}")
        if self.num_entities < 60:
            raise ValueError(
                f"num_entities must be >= 60 (each split needs a few entities of every type), got {self.num_entities}"
            )

    @property
    def key(self) -> str:
        """A short digest of the configuration and the generator version: the cache directory's name."""
        text = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class World:
    passages: list[str]  # JsonCollection contents; a passage's id is its position
    questions: dict[str, list[dict]]  # split -> raw MuSiQue records


def generate_world(config: WorldConfig) -> World:
    """Build the world in memory. One seeded generator drives every draw, in a fixed order."""
    rng = np.random.default_rng(config.seed)
    source = NameSource(rng, reserved=template_words())
    passages: list[str] = []
    questions: dict[str, list[dict]] = {}
    for split in SPLITS:
        kb = build_knowledge_base(round(config.num_entities * SPLIT_SHARES[split]), rng, source)
        fact_ids: dict[tuple[str, int], int] = {}
        for relation_name, subject in kb.facts():
            relation = RELATION_BY_NAME[relation_name]
            title = kb.names[relation.subject][subject]
            text = relation.passage.format(s=title, o=kb.names[relation.object][kb.obj(relation_name, subject)])
            fact_ids[(relation_name, subject)] = len(passages)
            passages.append(passage_contents(title, text))
        questions[split] = sample_questions(kb, fact_ids, passages, config.hops, config.num_questions, rng)
    return World(passages, questions)


def write_world(world: World, config: WorldConfig, out_dir: str | os.PathLike) -> Path:
    """Write ``corpus.jsonl``, ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` and ``world.json`` into
    ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / CORPUS_FILE).open("w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": str(i), "contents": c}, ensure_ascii=False) + "\n" for i, c in enumerate(world.passages)
        )
    for split, records in world.questions.items():
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    info = {
        "config": asdict(config),
        "generator_version": GENERATOR_VERSION,
        "passages": len(world.passages),
        "questions": {split: len(records) for split, records in world.questions.items()},
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out


def cached_world(config: WorldConfig) -> Path:
    """The directory of this configuration's world in the research_env cache, generated on first use (one
    builder at a time across processes, and moved into place whole)."""
    from filelock import FileLock

    target = cache_root() / "worlds" / f"synthetic-{config.key}"
    if (target / INFO_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / INFO_FILE).is_file():
            with staged_directory(target) as staging:
                write_world(generate_world(config), config, staging)
    return target
