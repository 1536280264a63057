"""Answer many searches with as few retriever calls as possible: one call per distinct (retriever, k), its
results split back per search. Used by the service's micro-batcher and by the batched vector env."""

from __future__ import annotations

from collections.abc import Sequence

from research_env.retrieval.base import Document, Retriever, RetrieverError

#: One search: the retriever to ask, its queries and its top-k.
Search = tuple[Retriever, Sequence[str], int]
#: What a search gets back: one document list per query, or the error its group's call raised.
Outcome = list[list[Document]] | Exception


def search_grouped(searches: Sequence[Search]) -> tuple[list[Outcome], int]:
    """Each search's outcome, in order, and the number of retriever calls made.

    Searches are grouped by (retriever, k), not by k alone: top-k lists are not always prefixes of each other
    (HNSW), so a larger k cannot answer a smaller one. A failed call is every search of its group's outcome
    (never swallowed, never an empty result); other groups are unaffected.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (retriever, _, k) in enumerate(searches):
        groups.setdefault((id(retriever), k), []).append(i)
    outcomes: list[Outcome] = [[] for _ in searches]
    for members in groups.values():
        retriever, _, k = searches[members[0]]
        queries = [q for i in members for q in searches[i][1]]
        try:
            results = retriever.search(queries, k)
            if len(results) != len(queries):
                raise RetrieverError(
                    f"{retriever.identity} returned {len(results)} result lists for {len(queries)} queries"
                )
        except Exception as e:  # delivered to each search of the group, as a direct call would raise it
            for i in members:
                outcomes[i] = e
            continue
        start = 0
        for i in members:
            outcomes[i] = results[start : start + len(searches[i][1])]
            start += len(searches[i][1])
    return outcomes, len(groups)
