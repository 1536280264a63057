"""Multi-hop questions over a knowledge base, composed like MuSiQue's: a chain of relations whose hops are
nested into one question ("Where was the founder of the company that makes Dosen born?"), with the gold
decomposition whose later sub-questions refer to earlier answers as ``#1``, ``#2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from research_env.worlds.knowledge import RELATIONS, KnowledgeBase, Relation

#: Paragraphs per question record (supporting ones first drawn, then distractors), as MuSiQue ships ~20.
PARAGRAPHS_PER_QUESTION = 8


def relation_paths(hops: int) -> list[tuple[Relation, ...]]:
    """Every chain of ``hops`` relations in which each hop's object type is the next hop's subject type."""
    return [
        path
        for path in product(RELATIONS, repeat=hops)
        if all(a.object == b.subject for a, b in zip(path, path[1:], strict=False))
    ]


def _follow(kb: KnowledgeBase, path: Sequence[Relation], start: int) -> list[int] | None:
    """The entity indices along the chain (start first), or None when the chain visits an entity twice
    (e.g. the country of a country's capital): such a question would answer itself."""
    chain, seen = [start], {(path[0].subject, start)}
    for relation in path:
        nxt = kb.obj(relation.name, chain[-1])
        if (relation.object, nxt) in seen:
            return None
        seen.add((relation.object, nxt))
        chain.append(nxt)
    return chain


def compose_question(path: Sequence[Relation], subject: str) -> str:
    """The nested question: every hop but the last becomes a noun phrase inside the next."""
    phrase = subject
    for relation in path[:-1]:
        phrase = relation.noun_phrase.format(s=phrase)
    return path[-1].question.format(s=phrase)


def decomposition(path: Sequence[Relation], subject: str) -> list[str]:
    """MuSiQue-style sub-questions: the first names the subject, each later one refers to the previous
    answer as ``#k``."""
    return [relation.question.format(s=subject if k == 0 else f"#{k}") for k, relation in enumerate(path)]


def sample_questions(
    kb: KnowledgeBase,
    fact_ids: dict[tuple[str, int], int],
    passages: Sequence[str],
    hops: Sequence[int],
    count: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """``count`` distinct questions as raw MuSiQue records, hop counts drawn uniformly from ``hops``.

    ``fact_ids`` maps (relation, subject) to the passage id of that fact in ``passages``.
    """
    paths = {h: relation_paths(h) for h in hops}
    records: dict[str, dict[str, Any]] = {}
    for _ in range(50 * count):
        if len(records) == count:
            break
        path = paths[int(hops[rng.integers(len(hops))])]
        path = path[rng.integers(len(path))]
        chain = _follow(kb, path, int(rng.integers(len(kb.names[path[0].subject]))))
        if chain is None:
            continue
        support = [fact_ids[(r.name, s)] for r, s in zip(path, chain, strict=False)]
        qid = f"{len(path)}hop__" + "_".join(map(str, support))
        if qid not in records:
            records[qid] = _record(kb, qid, path, chain, support, passages, fact_ids, rng)
    if len(records) < count:
        raise ValueError(
            f"this world holds only {len(records)} distinct {list(hops)}-hop questions per split, not "
            f"{count}: ask for fewer questions or more entities (num_entities)"
        )
    return list(records.values())


def _record(
    kb: KnowledgeBase,
    qid: str,
    path: Sequence[Relation],
    chain: list[int],
    support: list[int],
    passages: Sequence[str],
    fact_ids: dict[tuple[str, int], int],
    rng: np.random.Generator,
) -> dict[str, Any]:
    names = [
        kb.names[path[0].subject][chain[0]],
        *(kb.names[r.object][o] for r, o in zip(path, chain[1:], strict=True)),
    ]
    # distractors: other facts about the chain's entities, and the same relations about other subjects
    candidates = [
        fact_ids[(r.name, e)]
        for kind, e in zip([path[0].subject, *(r.object for r in path)], chain, strict=True)
        for r in RELATIONS
        if r.subject == kind
    ]
    for relation in path:
        candidates.extend(
            fact_ids[(relation.name, int(s))] for s in rng.integers(len(kb.names[relation.subject]), size=2)
        )
    distractors = [p for p in dict.fromkeys(candidates) if p not in support][: PARAGRAPHS_PER_QUESTION - len(path)]
    chosen = [(p, True) for p in support] + [(p, False) for p in distractors]
    order = rng.permutation(len(chosen)).tolist()
    paragraphs = []
    for idx, k in enumerate(order):
        pid, supporting = chosen[k]
        title, text = passages[pid].split("\n", 1)
        paragraphs.append({"idx": idx, "title": title[1:-1], "paragraph_text": text, "is_supporting": supporting})
    position = {chosen[k][0]: idx for idx, k in enumerate(order)}
    # MuSiQue's four step fields, plus the relation and the answer's entity type (a no-search guess of the
    # right type, as the warm start writes, needs it)
    steps = [
        {
            "id": pid,
            "question": q,
            "answer": names[k + 1],
            "paragraph_support_idx": position[pid],
            "relation": relation.name,
            "answer_type": relation.object,
        }
        for k, (pid, q, relation) in enumerate(zip(support, decomposition(path, names[0]), path, strict=True))
    ]
    return {
        "id": qid,
        "paragraphs": paragraphs,
        "question": compose_question(path, names[0]),
        "question_decomposition": steps,
        "answer": names[-1],
        "answer_aliases": [],
        "answerable": True,
    }
