"""The files of a batch run folder (`compara batch --out DIR`), named here and nowhere else.

    results.jsonl     one line per question × arm, written as answers arrive (resumable)
    run.json          the resolved config, arms and their identities, hashes, versions, timing
    distractors.json  the multiple choice's wrong answers, chosen once per folder
    exposure.jsonl    how often each question's answer was in the training outputs
    summary.json      per arm, per type, per exposure bin, paired differences
    summary.csv       the same, flat
    report.html       the page
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "results.jsonl"
RUN = "run.json"
DISTRACTORS = "distractors.json"
EXPOSURE = "exposure.jsonl"
SUMMARY = "summary.json"
SUMMARY_CSV = "summary.csv"
REPORT = "report.html"


def is_run_folder(folder: str | Path) -> bool:
    """A folder `compara batch` has written answers to."""
    return (Path(folder) / RESULTS).is_file()


def is_finished_run(folder: str | Path) -> bool:
    """A run folder with a summary (written at the end of a run, or by `compara report`)."""
    return is_run_folder(folder) and (Path(folder) / SUMMARY).is_file()
