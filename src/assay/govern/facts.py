"""``card.yaml``: the facts about a model that no evaluation can measure.

Intended use, out-of-scope use, licence, contact, authors and the names of the training data sets are the
provider's to state (Mitchell et al. 2019, "Model Cards for Model Reporting", sections 1-2 and 5-6; the Hugging
Face model card template). ``assay card`` reads them from a small YAML file; a fact the file does not give is
marked TODO in the card and listed as a finding, never invented.

The file is untrusted input: at most :data:`MAX_FACTS_BYTES`, UTF-8, parsed with ``yaml.safe_load`` after its
events are checked (no tags such as ``!!python/object``, no anchors or aliases), then validated with pydantic:
an unknown key, a wrong type or an empty value is an :class:`~assay.errors.OptionError` naming the key (and the
key it was probably meant to be) and the line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError

from assay.errors import OptionError

__all__ = ["MAX_FACTS_BYTES", "REQUIRED_FACTS", "CardFacts", "FactsFile", "load_card_facts", "parse_card_facts",
           "parse_facts", "read_facts_file"]

FactsModel = TypeVar("FactsModel", bound=BaseModel)

#: A card.yaml is a few kilobytes of prose.
MAX_FACTS_BYTES = 256 * 1024
#: A card.yaml needs no more YAML nodes than this (every key a short list).
MAX_FACTS_NODES = 5000

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
_Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

#: Facts every card should state; a card without one marks it TODO and lists it (card key -> what it is).
REQUIRED_FACTS: dict[str, str] = {
    "developers": "who developed the model (people or organisation)",
    "contact": "who to contact about the model",
    "license": "the model's licence (an SPDX-style id such as apache-2.0, or 'other')",
    "intended_use": "what the model is for, and for whom",
    "out_of_scope_use": "uses the model is not meant or not fit for",
    "datasets": "the data sets the model was trained on",
}


class FactsFile(BaseModel):
    """Facts read from a YAML file the provider writes (``card.yaml``, ``datasheet.yaml``): remembers the file and
    the sha256 of its bytes, so the card can cite exactly what it was built from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _source: str | None = PrivateAttr(default=None)
    _sha256: str | None = PrivateAttr(default=None)

    @property
    def source_file(self) -> str | None:
        """The file the facts were read from (None when built in Python)."""
        return self._source

    @property
    def sha256(self) -> str:
        """sha256 of the file's bytes, or of the facts as canonical JSON when they were built in Python."""
        if self._sha256 is not None:
            return self._sha256
        text = json.dumps(self.model_dump(exclude_none=True), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def remember_file(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Record that these facts were read from ``path`` holding ``data``."""
        self._source = str(Path(path))
        self._sha256 = hashlib.sha256(data).hexdigest()


class CardFacts(FactsFile):
    """What ``card.yaml`` may say. Only :data:`REQUIRED_FACTS` are TODO when missing; the rest are optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: _Word | None = Field(None, description="The model's name (default: the registry name or the model file).")
    description: _Text | None = Field(None, description="What the model is, in a few sentences.")
    developers: list[_Word] | None = Field(None, description="People or organisation who developed the model.")
    contact: _Word | None = Field(None, description="Who to contact about the model (e-mail, team, URL).")
    card_authors: list[_Word] | None = Field(None, description="Who wrote this card's facts.")
    license: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")] \
        | None = Field(None, description="Licence id as the Hugging Face Hub lists them (apache-2.0, mit, other).")
    base_model: _Word | None = Field(None, description="The model this one was fine-tuned from (a Hub id).")
    language: list[_Word] | None = Field(None, description="Languages of a text model (ISO 639 codes).")
    tags: list[_Word] | None = Field(None, description="Extra tags for the card's metadata.")
    datasets: list[_Word] | None = Field(None, description="Training data sets (Hub ids or names).")
    training_data: _Text | None = Field(None, description="How the training data was collected and prepared.")
    datasheet: _Word | None = Field(None, description="Path or URL of the training data's datasheet.")
    intended_use: _Text | None = Field(None, description="Primary intended uses and users.")
    out_of_scope_use: _Text | None = Field(None, description="Uses the model is not meant or not fit for.")
    factors: _Text | None = Field(None, description="Groups, instruments and environments that matter for it.")
    limitations: _Text | None = Field(None, description="Known limitations beyond what the evidence shows.")
    recommendations: _Text | None = Field(None, description="What users should do about the risks.")
    ethical_considerations: _Text | None = Field(None, description="Sensitive data, risks to people, mitigations.")
    monitoring: _Text | None = Field(None, description="Monitoring plan: who watches what, thresholds, escalation.")
    citation: _Text | None = Field(None, description="How to cite the model (BibTeX or APA).")

    @property
    def source(self) -> str | None:
        """The file the facts were read from (None when built in Python)."""
        return self.source_file

    def missing(self) -> list[str]:
        """The :data:`REQUIRED_FACTS` these facts do not give, in the card's order."""
        return [key for key in REQUIRED_FACTS if getattr(self, key) in (None, [])]


_FIX = "card.yaml is a mapping of facts, e.g. `license: apache-2.0` and `intended_use: ...` (see the README)"


def _refuse_events(text: str, source: str, name: str = "card.yaml", fix: str = _FIX) -> None:
    """Refuse tags (``!!python/object``, ``!custom``), anchors and aliases before anything is built."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    nodes = 0
    for event in yaml.parse(text, Loader=loader):
        mark = event.start_mark
        line = f"{source}:{mark.line + 1}" if mark is not None else source
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise OptionError(f"{name} uses a YAML anchor or alias (&name / *name)", where=line,
                              fix="write each fact out in full")
        tag = getattr(event, "tag", None)
        if tag is not None and not (isinstance(event, yaml.ScalarEvent) and tag == "!"):
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")[:60]
            raise OptionError(f"{name} uses the YAML tag {shown!r}; tags are refused (nothing in a {name} is "
                              "ever turned into an object)", where=line, fix="remove the tag: facts are plain text")
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_FACTS_NODES:
                raise OptionError(f"{name} has more than {MAX_FACTS_NODES:,} YAML values", where=line, fix=fix)


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key -> its line (1-based), for messages; {} when the text does not compose to a mapping."""
    import yaml

    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in root.value if isinstance(k, yaml.ScalarNode)}


def parse_facts(text: str, source: str, model: type[FactsModel], *, name: str, fix: str,
                examples: Mapping[str, str] | None = None) -> FactsModel:
    """A YAML file of facts validated into ``model`` (a pydantic model that forbids extra keys): the shared
    safe loader of card.yaml and datasheet.yaml. Every problem is an OptionError naming the key (with its
    line) and the fix; ``examples`` adds an example to the fix of a key given with the wrong type."""
    import yaml

    if len(text.encode("utf-8")) > MAX_FACTS_BYTES:
        raise OptionError(f"{name} is larger than {MAX_FACTS_BYTES // 1024} KiB", where=source, fix=fix)
    try:
        _refuse_events(text, source, name, fix)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise OptionError(f"{name} is not valid YAML: {problem}", where=where,
                          fix="check the indentation; quote text that holds ': '") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionError(f"{name} must be a mapping of facts, got a {type(raw).__name__}", where=source, fix=fix)
    lines = _key_lines(text)
    known = list(model.model_fields)
    unknown = [str(k) for k in raw if str(k) not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        first = lines.get(unknown[0])
        raise OptionError(f"{name} has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}",
                          where=f"{source}:{first}" if first else source,
                          fix=f"use only these keys: {', '.join(known)}")
    try:
        facts = model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        path = ".".join(str(p) for p in error["loc"])
        line = lines.get(key)
        annotation = str(model.model_fields[key].annotation) if key in model.model_fields else ""
        expected = "a list of short texts" if "list" in annotation else "a whole number" if "int" in annotation \
            else "text"
        raise OptionError(f"{name} key {path!r}: {error['msg']} (got {type(error.get('input')).__name__})",
                          where=f"{source}:{line}" if line else source,
                          fix=f"give {key!r} as {expected}" + (f", {(examples or {})[key]}" if key in (examples or {})
                                                                 else "")) from None
    return facts


def parse_card_facts(text: str, source: str = "card.yaml") -> CardFacts:
    """Facts from card.yaml text; every problem an OptionError naming the key (with its line) and the fix."""
    return parse_facts(text, source, CardFacts, name="card.yaml", fix=_FIX,
                       examples={"license": "e.g. `license: apache-2.0`"})


def read_facts_file(path: str | os.PathLike[str], *, name: str, fix: str, option: str) -> tuple[str, bytes]:
    """The text (UTF-8, no NUL, at most :data:`MAX_FACTS_BYTES`) and bytes of a facts file; ``option`` is the
    command-line option that names it (for the fix when it is missing)."""
    file = Path(path)
    where = str(file)
    try:
        if not file.is_file():
            raise OptionError(f"no {name} at {file}", where=where,
                              fix=f"give the path of a YAML file of facts ({option} {name})")
        if file.stat().st_size > MAX_FACTS_BYTES:
            raise OptionError(f"{file.name} is larger than {MAX_FACTS_BYTES // 1024} KiB", where=where, fix=fix)
        data = file.read_bytes()
    except OSError as exc:
        raise OptionError(f"cannot read {file} ({exc.strerror or exc})", where=where,
                          fix="check the path and its permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{file.name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          where=where, fix=f"save {name} as UTF-8 text") from None
    if "\x00" in text:
        raise OptionError(f"{file.name} holds NUL bytes: it is not a text file", where=where, fix=fix)
    return text, data


def load_card_facts(path: str | os.PathLike[str]) -> CardFacts:
    """Read and validate ``card.yaml`` (see the module docstring); remembers its path and sha256 for the card."""
    text, data = read_facts_file(path, name="card.yaml", fix=_FIX, option="--card")
    facts = parse_card_facts(text, str(Path(path)))
    facts.remember_file(path, data)
    return facts


def describe_facts() -> list[tuple[str, str]]:
    """(key, description) of every card.yaml key, for help texts and the README."""
    return [(name, field.description or "") for name, field in CardFacts.model_fields.items()]
