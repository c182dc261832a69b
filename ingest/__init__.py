"""Ingest: stream a ptwiki XML dump into clean articles and an Alpaca-PT instruction set."""
