"""The paper's Table 2 baselines as agents: naive generation, naive RAG (top-5 once), Iter-RetGen (3 rounds)
and IRCoT-style retrieval per reasoning sentence. They prompt the model FlashRAG-style, retrieve through
the env's own retriever, and submit their answer to the env in the tag format so that it is scored by the
one reward implementation (their ``format_ok`` is therefore ours, not the model's)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import gymnasium as gym

from agents.evaluation.records import EpisodeRecord, record_from_info
from agents.generation.base import GenerationBackend
from research_env.retrieval import Document, Retriever

NAIVE_INSTRUCTION = (
    "Answer the question based on your own knowledge. Only give me the answer and do not output any other words."
)
RAG_INSTRUCTION = (
    "Answer the question based on the given documents. Only give me the answer and do not output "
    "any other words.\n\nThe following are given documents.\n\n{documents}"
)
IRCOT_INSTRUCTION = (
    "You answer a multi-hop question using the given documents. Reason one sentence at a time; "
    'when you know the answer, write "So the answer is: <answer>".\n\n'
    "The following are given documents.\n\n{documents}"
)
_ANSWER_MARK = re.compile(r"so the answer is:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
#: Characters that would break the tag format the answer is submitted in.
_TAG_CHARS = str.maketrans("", "", "{}<>")


def render_documents(documents: Sequence[Document]) -> str:
    """FlashRAG's reference layout: ``Doc i(Title: t) text``, one per line."""
    lines = []
    for i, doc in enumerate(documents, 1):
        title, _, text = doc.contents.partition("\n")
        lines.append(f"Doc {i}(Title: {title.strip().strip(chr(34))}) {text.strip()}")
    return "\n".join(lines)


@dataclass
class _Answer:
    answer: str
    thought: str = ""
    queries: list[str] = field(default_factory=list)
    generated_tokens: int = 0


@dataclass
class PromptedBaseline:
    """Shared machinery: prompt rendering (plain text, or the tokenizer's chat template with
    ``apply_chat``), batched generation, retrieval, and submitting the answer to the env."""

    backend: GenerationBackend
    apply_chat: bool = False
    top_k: int = 5
    max_answer_tokens: int = 32
    name: str = "baseline"

    def run(self, envs: Sequence[gym.Env], question_ids: Sequence[str]) -> Iterator[EpisodeRecord]:
        for start in range(0, len(question_ids), len(envs)):
            batch = list(zip(envs, question_ids[start : start + len(envs)], strict=False))
            for env, qid in batch:
                env.reset(options={"question_id": qid})
            questions = [env.unwrapped.record.question for env, _ in batch]
            answers = self.answer(questions, batch[0][0].unwrapped.retriever)
            for (env, _), answer in zip(batch, answers, strict=True):
                yield self._submit(env, answer)

    def answer(self, questions: list[str], retriever: Retriever) -> list[_Answer]:
        raise NotImplementedError

    def _submit(self, env: gym.Env, answer: _Answer) -> EpisodeRecord:
        final = answer.answer.translate(_TAG_CHARS).strip()
        thought = answer.thought.translate(_TAG_CHARS).strip() or "I answer from the prompt."
        eos = env.unwrapped.eos_token
        _, reward, _, _, info = env.step(f"<think> {thought} </think>\n<answer> \\boxed{{{final}}} </answer>{eos}")
        return record_from_info(
            env,
            reward,
            info,
            env.unwrapped.response,
            num_searches=len(answer.queries),
            generated_tokens=answer.generated_tokens,
            details={"agent": self.name, "raw_answer": answer.answer, "queries": answer.queries},
        )

    def _prompt(self, instruction: str, question: str, continuation: str = "") -> list[int]:
        tokenizer = self.backend.tokenizer
        user = f"Question: {question}"
        if self.apply_chat:
            messages = [{"role": "system", "content": instruction}, {"role": "user", "content": user}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{instruction}\n\n{user}\nAnswer:"
        return tokenizer.encode(text + continuation, add_special_tokens=False)

    def _generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[tuple[str, int]]:
        """First line of each generation (the answer style these prompts ask for) and its token count."""
        chunks = self.backend.generate(prompts, max_new_tokens=max_new_tokens, stop=["\n"])
        eos_texts = [t for t in (self.backend.tokenizer.eos_token,) if t]
        texts = []
        for chunk in chunks:
            text = chunk.text
            for eos in eos_texts:
                text = text.replace(eos, "")
            texts.append((text.strip().split("\n", 1)[0].strip(), len(chunk.token_ids)))
        return texts


@dataclass
class NaiveGeneration(PromptedBaseline):
    """The model answers from its own knowledge, no retrieval."""

    name: str = "naive_generation"

    def answer(self, questions: list[str], retriever: Retriever) -> list[_Answer]:
        outputs = self._generate([self._prompt(NAIVE_INSTRUCTION, q) for q in questions], self.max_answer_tokens)
        return [_Answer(text, generated_tokens=n) for text, n in outputs]


@dataclass
class NaiveRAG(PromptedBaseline):
    """Retrieve top-k for the question once, then answer with the documents in the prompt."""

    name: str = "naive_rag"

    def answer(self, questions: list[str], retriever: Retriever) -> list[_Answer]:
        documents = retriever.search(questions, self.top_k)
        prompts = [
            self._prompt(RAG_INSTRUCTION.format(documents=render_documents(docs)), q)
            for q, docs in zip(questions, documents, strict=True)
        ]
        outputs = self._generate(prompts, self.max_answer_tokens)
        return [_Answer(text, queries=[q], generated_tokens=n) for q, (text, n) in zip(questions, outputs, strict=True)]


@dataclass
class IterRetGen(PromptedBaseline):
    """Iter-RetGen (Shao et al., 2023): each round retrieves with the question plus the previous round's
    generation, then generates again with the new documents; the last generation is the answer."""

    iterations: int = 3
    name: str = "iter_retgen"

    def answer(self, questions: list[str], retriever: Retriever) -> list[_Answer]:
        answers = [_Answer("") for _ in questions]
        for _ in range(self.iterations):
            queries = [f"{q} {a.answer}".strip() for q, a in zip(questions, answers, strict=True)]
            documents = retriever.search(queries, self.top_k)
            prompts = [
                self._prompt(RAG_INSTRUCTION.format(documents=render_documents(docs)), q)
                for q, docs in zip(questions, documents, strict=True)
            ]
            for a, query, (text, n) in zip(
                answers, queries, self._generate(prompts, self.max_answer_tokens), strict=True
            ):
                a.answer, a.generated_tokens = text, a.generated_tokens + n
                a.queries.append(query)
        return answers


@dataclass
class IRCoT(PromptedBaseline):
    """IRCoT-style (Trivedi et al., 2023): retrieve for the question, then alternate one reasoning sentence
    and a retrieval with that sentence, at most ``max_searches`` retrievals in all, until a sentence says
    "So the answer is: …"; without one, a last call answers from all documents and the reasoning."""

    max_searches: int = 5
    max_sentence_tokens: int = 64
    name: str = "ircot"

    def answer(self, questions: list[str], retriever: Retriever) -> list[_Answer]:
        answers = [_Answer("", queries=[q]) for q in questions]
        documents = [list(docs) for docs in retriever.search(questions, self.top_k)]
        thoughts: list[list[str]] = [[] for _ in questions]
        active = list(range(len(questions)))
        while active:
            prompts = [
                self._prompt(
                    IRCOT_INSTRUCTION.format(documents=render_documents(documents[i])),
                    questions[i],
                    " ".join(["", *thoughts[i]]),
                )
                for i in active
            ]
            outputs = self._generate(prompts, self.max_sentence_tokens)
            searching = []
            for i, (text, n) in zip(active, outputs, strict=True):
                sentence = _SENTENCE_END.split(text, maxsplit=1)[0].strip()
                thoughts[i].append(sentence)
                answers[i].generated_tokens += n
                if (mark := _ANSWER_MARK.search(sentence)) is not None:
                    answers[i].answer = sentence[mark.end() :].strip()
                elif sentence and len(answers[i].queries) < self.max_searches:
                    searching.append(i)
            if searching:
                queries = [thoughts[i][-1] for i in searching]
                for i, query, docs in zip(searching, queries, retriever.search(queries, self.top_k), strict=True):
                    seen = {d.id for d in documents[i]}
                    documents[i] += [d for d in docs if d.id not in seen]
                    answers[i].queries.append(query)
            active = searching
        self._answer_unfinished(questions, answers, documents, thoughts)
        for a, steps in zip(answers, thoughts, strict=True):
            a.thought = " ".join(steps)
        return answers

    def _answer_unfinished(
        self, questions: list[str], answers: list[_Answer], documents: list[list[Document]], thoughts: list[list[str]]
    ) -> None:
        unfinished = [i for i, a in enumerate(answers) if not _ANSWER_MARK.search(" ".join(thoughts[i]))]
        if not unfinished:
            return
        prompts = [
            self._prompt(RAG_INSTRUCTION.format(documents=render_documents(documents[i])), questions[i])
            for i in unfinished
        ]
        for i, (text, n) in zip(unfinished, self._generate(prompts, self.max_answer_tokens), strict=True):
            answers[i].answer, answers[i].generated_tokens = text, answers[i].generated_tokens + n
