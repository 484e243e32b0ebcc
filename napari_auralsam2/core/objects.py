"""The objects of one video's annotation: names, committed flags, audio guidance and their prompts.

A host keeps one `ObjectBook` per video. Clicks and boxes may live in the host's own layers; the
book holds the prompts that have no such home (an audio start, a hand-corrected mask) and merges
both into what a session is given (`session_prompts`), so every host runs an object the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from .session import Prompt

Prompts = dict[int, dict[int, Prompt]]  # frame -> object id -> prompt


@dataclass
class ObjectRecord:
    """One annotated object as a host manages it."""

    object_id: int
    name: str = ""
    text: str = ""  # the words naming the object (Ref-AVS weights read them with the audio)
    committed: bool = False
    audio_guidance: bool = True
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"object {self.object_id}"


class ObjectBook:
    """Every object of a video, by id."""

    def __init__(self, records: Iterable[ObjectRecord] = ()) -> None:
        self.records: dict[int, ObjectRecord] = {r.object_id: r for r in records}

    def __contains__(self, object_id: int) -> bool:
        return int(object_id) in self.records

    def get(self, object_id: int) -> ObjectRecord:
        """The object's record, created on first use."""
        object_id = int(object_id)
        return self.records.setdefault(object_id, ObjectRecord(object_id))

    def add(self, prompt: Prompt) -> None:
        """Keep a prompt; it replaces the object's earlier prompt on that frame."""
        record = self.get(prompt.object_id)
        record.prompts = [p for p in record.prompts if p.frame != prompt.frame] + [prompt]

    def remove(self, object_id: int) -> None:
        self.records.pop(int(object_id), None)

    def active(self) -> set[int]:
        """Objects still being annotated (not committed)."""
        return {k for k, r in self.records.items() if not r.committed}

    def unguided(self) -> set[int]:
        """Objects whose audio guidance was turned off."""
        return {k for k, r in self.records.items() if not r.audio_guidance}

    def session_prompts(self, host: Prompts, objects: set[int] | None = None) -> Prompts:
        """The prompts to give a session: the host's (clicks, boxes) and the book's, for `objects`
        (default: every object not committed), each carrying its object's text. On one frame a mask
        correction replaces the object's clicks (as SAM2's mask prompt does); an audio start adds
        nothing to clicks there (the audio guides clicked objects anyway)."""
        committed = {k for k, r in self.records.items() if r.committed}
        wanted = (lambda k: k in objects) if objects is not None else (lambda k: k not in committed)
        merged: Prompts = {}
        for t, by_object in host.items():
            for k, prompt in by_object.items():
                if wanted(k):
                    merged.setdefault(t, {})[k] = prompt
        for k, record in self.records.items():
            if not wanted(k):
                continue
            for prompt in record.prompts:
                here = merged.setdefault(prompt.frame, {})
                if prompt.mask is not None or k not in here:
                    here[k] = prompt
        for by_object in merged.values():
            for k, prompt in by_object.items():
                text = self.records[k].text if k in self.records else ""
                if text and not prompt.text:
                    by_object[k] = replace(prompt, text=text)
        return {t: by_object for t, by_object in merged.items() if by_object}

    def prompt_frames(self, host: Prompts, object_id: int) -> list[int]:
        """The frames where an object has a prompt, in order."""
        prompts = self.session_prompts(host, {int(object_id)})
        return sorted(prompts)
