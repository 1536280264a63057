"""Evaluation: agents that play whole episodes (ReSearch, naive generation/RAG, IRCoT, Iter-RetGen, the oracle),
their episode records, the LLM judge, and the run over datasets that writes ``results.json``."""
