"""The ground the stages stand on: configuration base, files, text, logs, models, prompts,
generation, questions and measures. Imports nothing from compara, ingest, rag or finetune."""
