"""Retrieval: chunk articles, embed them, store a FAISS index with a manifest, search it.

The API the comparison stage uses (heavy libraries load only when these are called)::

    from rag.retrieve import load_index, prompt_passages
    index = load_index(folder, cfg.index, cfg.retrieval)   # verified, or rag.store.IndexRefused
    passages = index.search(question, k=4, retriever="hybrid")
    prompt_passages(passages)                              # dicts for core.prompts.RagTemplate

Modules: ``chunking`` (articles → chunks), ``embedders`` (LangChain ``Embeddings`` backends),
``bm25`` (keyword index), ``store`` (build, manifest, verification), ``retrieve`` (search and
fusion), ``evaluate`` (hit@k, MRR, latency). Its commands are in :mod:`compara.cli.index`.
"""
