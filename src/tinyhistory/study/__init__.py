"""``tinyhistory study``: blind pairwise human ratings of generated videos, and an Elo table with intervals.

A study is a folder (:mod:`~tinyhistory.study.layout`) of systems' videos over the same storyboards and seeds,
registered by content hash. ``serve`` (:mod:`~tinyhistory.study.server`) shows raters pairs of videos of one
storyboard side by side and appends every vote to ``votes.jsonl`` (:mod:`~tinyhistory.study.votes`), scheduling the
least-compared pairs first (:mod:`~tinyhistory.study.schedule`). ``report`` (:mod:`~tinyhistory.study.report`) fits
Bradley–Terry ratings on the Elo scale with bootstrap intervals (:mod:`~tinyhistory.study.rating`) and sets the
project's automatic metrics beside them.
"""

from __future__ import annotations


class StudyError(ValueError):
    """A problem with a study's inputs or files, said in one line (the CLI prints it as ``tinyhistory: error:``)."""
