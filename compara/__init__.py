"""compara: compare base, RAG, fine-tuned and fine-tuned + RAG answers about Portuguese Wikipedia."""

__version__ = "0.1.0"
