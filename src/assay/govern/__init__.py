"""Governance documents built from evidence: model cards and the NIST AI RMF / EU AI Act crosswalk.

* :mod:`~assay.govern.card`: :func:`build_card` (evaluation bundles + the provider's facts + the registry's
  history -> MODEL_CARD.md with Hugging Face front matter, model_card.html, crosswalk.json) and
  :func:`write_card` (an atomic output folder of kind ``card``);
* :mod:`~assay.govern.facts`: ``card.yaml``, the facts no evaluation can know (:class:`CardFacts`);
* :mod:`~assay.govern.datasheet`: ``datasheet.yaml`` -> DATASHEET.md (Gebru et al.'s seven sections, SPDX licence
  and its obligations, gaps, the audit quoted) for the card and ``assay audit``;
* :mod:`~assay.govern.crosswalk`: the mapping data file ``crosswalk.yaml`` and its application to the evidence;
* :mod:`~assay.govern.bundles`: the bundles a card cites (evaluations, an audit), with the sha256 of each file.

Layer 7: reads evidence bundles and renders through :mod:`assay.report.card`; it never runs a model.
"""

from assay.govern.card import CARD_FILES, CARD_KIND, ModelCard, build_card, write_card
from assay.govern.crosswalk import build_crosswalk, load_crosswalk
from assay.govern.datasheet import Datasheet, gaps, licence_obligations, load_datasheet, render_datasheet
from assay.govern.facts import REQUIRED_FACTS, CardFacts, load_card_facts, parse_card_facts

__all__ = ["CARD_FILES", "CARD_KIND", "REQUIRED_FACTS", "CardFacts", "Datasheet", "ModelCard", "build_card",
           "build_crosswalk", "gaps", "licence_obligations", "load_card_facts", "load_crosswalk", "load_datasheet",
           "parse_card_facts", "render_datasheet", "write_card"]
