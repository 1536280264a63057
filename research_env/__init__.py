"""research-gym: ReSearch (arXiv 2503.19470) as a Gymnasium environment.

Importing the package registers ``ReSearch-MuSiQue-v0``, ``ReSearch-HotpotQA-v0``,
``ReSearch-2WikiMultihopQA-v0``, ``ReSearch-Bamboogle-v0`` and the generic ``ReSearch-v0``.
"""

from research_env.data import QADataset, QARecord, load_qa_dataset
from research_env.env import ReSearchEnv
from research_env.registration import ENV_IDS, GENERIC_ENV_ID, register_envs
from research_env.retrieval import BM25Retriever, Document, Retriever, RetrieverError, shared_retriever
from research_env.reward import EpisodeScore, exact_match, f1_score, normalize_answer, score_response

__version__ = "0.1.0"

register_envs()

__all__ = [
    "ENV_IDS",
    "GENERIC_ENV_ID",
    "BM25Retriever",
    "Document",
    "EpisodeScore",
    "QADataset",
    "QARecord",
    "ReSearchEnv",
    "Retriever",
    "RetrieverError",
    "exact_match",
    "f1_score",
    "load_qa_dataset",
    "normalize_answer",
    "score_response",
    "shared_retriever",
]
