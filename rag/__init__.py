"""Retrieval: chunk articles, embed them, store a FAISS index with a manifest, search it."""
