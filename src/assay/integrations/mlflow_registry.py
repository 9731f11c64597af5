"""Versions and aliases between Assay's registry and MLflow's model registry, both ways, idempotently.

The mapping:

* **Model**: Assay's ``NAME`` is MLflow's registered model ``NAME`` (every Assay name is a valid MLflow name).
* **Version**: Assay version N is one MLflow model version, linked by tags on it: ``assay.model_sha256`` and
  ``assay.evidence_sha256`` (the pair that makes an Assay version: the same pair is the same version), plus
  ``assay.version`` (N), ``assay.model_format``, ``assay.model_file``, ``assay.factory`` (a factory's
  ``package.module:callable``), ``assay.data_fingerprint``, ``assay.creator``, ``assay.created_at``,
  ``assay.git_commit``, ``assay.archived`` (the reason) and ``assay.tag.<key>`` for each Assay tag; the message
  is the version's description. MLflow numbers its versions itself: an export into a new MLflow model creates
  them in order, so MLflow version N is Assay version N; in a model that already had versions the numbers differ
  and the tags are the link.
* **Files**: each exported version gets one MLflow run (experiment ``assay-registry``) holding the model's files
  under ``assay/model/`` and the evidence bundle under ``assay/evidence/`` (where the MLflow evaluator plugin also
  writes it), with the bundle's metrics and CI ends logged as run metrics; the version's ``source`` is
  ``runs:/<run>/assay/model``.
* **Aliases** are aliases. MLflow keeps no history of them, so the history stays in Assay: an import records each
  alias it moves as an Assay move (reason: "imported from MLflow ..."). Neither direction removes an alias the
  other side does not have. MLflow allows fewer alias names (letters, digits, ``_``, ``-``; not ``latest`` or
  ``v<digits>``), Assay refuses all-digit ones: such aliases are skipped and reported, never renamed.

**Import** registers each MLflow version from the Assay files in its run (``Registry.register``: identical bytes
return the version already there) and then moves aliases with :func:`~assay.registry.promotion.promote`: the first
holder of an alias needs no gate; an alias Assay already holds elsewhere moves as a *forced* promotion -- the gate
still runs when it can and its verdict is recorded, since MLflow moved it without one. A version ``assay.archived``
is archived unless an alias points to it.

**A version without Assay evidence is refused, not imported as "no evidence"**: Assay's registry promises that
every version carries the bundle it was evaluated with, for the same model bytes (``Registry.register`` checks the
model sha256); the promotion gate, ``assay card`` and ``verify`` all read it. A version without one could never be
promoted or described, so admitting it would only move the failure later. The error names each such version and
how to give it evidence; ``skip_unevaluated`` imports the others. Everything is read and checked before anything
is written, so a refused import changes nothing.

**Idempotent**: run either again and it finds each version by its sha256 pair and each alias where it is, and
writes nothing new; a run interrupted half-way completes on the next one (an export interrupted between a run and
its model version leaves an unused run behind, nothing else). Two exports of one model at the same moment could
both create a version: run them one at a time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.errors import RegistryError, UserError
from assay.integrations._mlflow import (
    EVIDENCE_PATH,
    MODEL_PATH,
    client_for,
    evidence_metrics,
    log_metrics,
    mlflow_errors,
    quiet_store_logs,
    require_mlflow,
)
from assay.registry._types import check_alias, check_name

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion as MlflowVersion

    from assay.registry import ModelVersion, Registry

__all__ = ["EXPERIMENT", "AliasLink", "Transfer", "VersionLink", "export_to_mlflow", "import_from_mlflow"]

#: The MLflow experiment that holds the runs of exported versions.
EXPERIMENT = "assay-registry"
TAG_VERSION = "assay.version"
TAG_MODEL_SHA256 = "assay.model_sha256"
TAG_EVIDENCE_SHA256 = "assay.evidence_sha256"
TAG_FORMAT = "assay.model_format"
TAG_FILE = "assay.model_file"
TAG_FACTORY = "assay.factory"
TAG_DATA = "assay.data_fingerprint"
TAG_CREATOR = "assay.creator"
TAG_CREATED = "assay.created_at"
TAG_COMMIT = "assay.git_commit"
TAG_ARCHIVED = "assay.archived"
TAG_PREFIX = "assay.tag."


@dataclass(frozen=True)
class VersionLink:
    """Assay version ``assay_version`` is MLflow version ``mlflow_version``; ``created``: this call created the
    side it wrote to (False: it was there already)."""

    assay_version: int
    mlflow_version: int
    created: bool


@dataclass(frozen=True)
class AliasLink:
    """What happened to one alias: ``set`` (created or moved), ``unchanged``, ``forced`` (an import moved an alias
    Assay held elsewhere; ``note`` has the gate's verdict) or ``skipped`` (``note`` says why)."""

    alias: str
    assay_version: int | None
    mlflow_version: int | None
    action: str
    note: str = ""


@dataclass(frozen=True)
class Transfer:
    """What an export or import did, to which model, at which tracking URI (password hidden)."""

    name: str
    tracking_uri: str
    versions: list[VersionLink] = field(default_factory=list)
    aliases: list[AliasLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- export


def export_to_mlflow(registry: Registry, name: str, *, tracking_uri: str | None = None,
                     experiment: str = EXPERIMENT) -> Transfer:
    """Every version of ``name`` (model files, evidence bundle, sha256 and other tags) and every alias, into
    MLflow's model registry at ``tracking_uri`` (default: MLflow's, see :func:`~assay.integrations._mlflow.client_for`);
    versions already there (same sha256 pair) and aliases already in place are left alone."""
    require_mlflow("assay registry export-mlflow")
    versions = registry.versions(name)  # an unknown name fails before MLflow creates anything
    aliases = registry.aliases(name)
    with quiet_store_logs():
        return _export(registry, name, versions, aliases, tracking_uri, experiment)


def _export(registry: Registry, name: str, versions: list[ModelVersion], aliases: dict[str, int],
            tracking_uri: str | None, experiment: str) -> Transfer:
    client, where = client_for(tracking_uri, "assay registry export-mlflow")
    links: list[VersionLink] = []
    with mlflow_errors(where):
        _ensure_registered_model(client, name)
        existing: dict[tuple[str, str], MlflowVersion] = {}
        for mv in _mlflow_versions(client, name):  # oldest first: a pair exported twice maps to its first version
            pair = _pair(mv)
            if pair is not None:
                existing.setdefault(pair, mv)
        experiment_id: str | None = None
        for v in versions:
            found = existing.get((v.model_sha256, v.evidence_sha256))
            if found is not None:
                if v.archived and TAG_ARCHIVED not in (found.tags or {}):  # archived in Assay since the export
                    client.set_model_version_tag(name, found.version, TAG_ARCHIVED, v.archived_reason or "archived")
                links.append(VersionLink(v.version, int(found.version), created=False))
                continue
            if experiment_id is None:
                experiment_id = _experiment_id(client, experiment)
            links.append(VersionLink(v.version, _export_version(client, registry, v, experiment_id), created=True))
        to_mlflow = {link.assay_version: link.mlflow_version for link in links}
        current = _mlflow_aliases(client, name)
        alias_links: list[AliasLink] = []
        for alias, holder in aliases.items():
            target = to_mlflow[holder]
            problem = _mlflow_alias_problem(alias)
            if problem:
                alias_links.append(AliasLink(alias, holder, None, "skipped", problem))
            elif current.get(alias) == target:
                alias_links.append(AliasLink(alias, holder, target, "unchanged"))
            else:
                client.set_registered_model_alias(name, alias, str(target))
                was = current.get(alias)
                alias_links.append(AliasLink(alias, holder, target, "set",
                                             "" if was is None else f"was MLflow version {was}"))
    return Transfer(name, where, links, alias_links)


def _export_version(client: MlflowClient, registry: Registry, v: ModelVersion, experiment_id: str) -> int:
    """One run with the version's model files and bundle (and the bundle's metrics), then the model version."""
    from assay.evidence.bundle import read_evidence

    model_file = registry.model_path(v)
    evidence_dir = registry.evidence_dir(v)
    run = client.create_run(experiment_id, run_name=v.ref,
                            tags={"assay.model_name": v.name, TAG_VERSION: str(v.version)})
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(model_file.parent), MODEL_PATH)
        client.log_artifacts(run_id, str(evidence_dir), EVIDENCE_PATH)
        evidence = read_evidence(evidence_dir)
        log_metrics(client, run_id, evidence_metrics(evidence))
        client.set_tag(run_id, "assay.verdict", evidence.verdict)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    mv = client.create_model_version(v.name, source=f"runs:/{run_id}/{MODEL_PATH}", run_id=run_id,
                                     tags=_version_tags(v), description=v.message)
    return int(mv.version)


def _version_tags(v: ModelVersion) -> dict[str, str]:
    tags = {TAG_VERSION: str(v.version), TAG_MODEL_SHA256: v.model_sha256, TAG_EVIDENCE_SHA256: v.evidence_sha256,
            TAG_FORMAT: v.model_format, TAG_FILE: str(v.model_spec.get("main", "")), TAG_CREATOR: v.creator,
            TAG_CREATED: v.created_at}
    if v.data_fingerprints:
        tags[TAG_DATA] = v.data_fingerprints[0]
    if v.model_spec.get("weights") is not None:  # a factory spec: its "path" is the import path, not a file
        tags[TAG_FACTORY] = str(v.model_spec.get("path", ""))
    if v.git_commit:
        tags[TAG_COMMIT] = v.git_commit
    if v.archived:
        tags[TAG_ARCHIVED] = v.archived_reason or "archived"
    tags.update({f"{TAG_PREFIX}{key}": value for key, value in v.tags.items()})
    return tags


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    if _registered_model(client, name) is not None:
        return
    try:
        client.create_registered_model(name, tags={"assay.exported": "true"},
                                       description="Exported from Assay's registry: each version's run holds its "
                                                   "model files (assay/model/) and evidence bundle "
                                                   "(assay/evidence/).")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # created by another export meanwhile: fine
            raise


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client.create_experiment(experiment)
    if found.lifecycle_stage != "active":
        raise RegistryError(f"the MLflow experiment {experiment!r} that holds exported versions was deleted",
                            where=experiment, fix=f"restore it (`mlflow experiments restore --experiment-id "
                                                  f"{found.experiment_id}`) or export into another experiment")
    return str(found.experiment_id)


def _mlflow_alias_problem(alias: str) -> str:
    """Why MLflow would refuse ``alias`` (its rules in ``mlflow.utils.validation``), or ''."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", alias):
        return "MLflow alias names allow only letters, digits, '_' and '-'"
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return "MLflow reserves 'latest' and 'v<number>' for its own version references"
    return ""


# ------------------------------------------------------------------------------------------------ shared


def _registered_model(client: MlflowClient, name: str) -> Any:
    """MLflow's registered model ``name``, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _mlflow_versions(client: MlflowClient, name: str) -> list[MlflowVersion]:
    """Every version of MLflow's model ``name``, oldest first (all pages)."""
    found: list[MlflowVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name='{name}'", page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda mv: int(mv.version))


def _mlflow_aliases(client: MlflowClient, name: str) -> dict[str, int]:
    model = client.get_registered_model(name)
    return {str(alias): int(version) for alias, version in (model.aliases or {}).items()}


def _pair(mv: MlflowVersion) -> tuple[str, str] | None:
    tags = mv.tags or {}
    model, evidence = tags.get(TAG_MODEL_SHA256), tags.get(TAG_EVIDENCE_SHA256)
    return (model, evidence) if model and evidence else None


# ----------------------------------------------------------------------------------------------- import


@dataclass(frozen=True)
class _Plan:
    """One MLflow version, downloaded and checked, ready to register."""

    mlflow_version: int
    model: str
    weights: str | None
    evidence: Path
    message: str | None
    tags: dict[str, str]
    creator: str | None
    archived: str | None


def import_from_mlflow(registry: Registry, name: str, *, tracking_uri: str | None = None,
                       skip_unevaluated: bool = False, n_bootstrap: int = 1000, seed: int = 0,
                       actor: str | None = None) -> Transfer:
    """Every version of MLflow's model ``name`` that carries Assay's files (see the module docstring), and its
    aliases, into ``registry``. A version without an Assay evidence bundle refuses the whole import (nothing is
    written) unless ``skip_unevaluated``; a bundle that is not of the model beside it always does.
    ``n_bootstrap``/``seed``: the gate of an alias that moves over an Assay holder."""
    check_name(name)
    with quiet_store_logs():
        return _import(registry, name, tracking_uri, skip_unevaluated, n_bootstrap, seed, actor)


def _import(registry: Registry, name: str, tracking_uri: str | None, skip_unevaluated: bool, n_bootstrap: int,
            seed: int, actor: str | None) -> Transfer:
    client, where = client_for(tracking_uri, "assay registry import-mlflow")
    with mlflow_errors(where):
        if _registered_model(client, name) is None:
            raise RegistryError(f"MLflow has no registered model {name!r}", where=where,
                                fix="check the name and the tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)")
        mlflow_versions = _mlflow_versions(client, name)
        mlflow_aliases = _mlflow_aliases(client, name)
    with tempfile.TemporaryDirectory(prefix="assay-mlflow-import-") as tmp:
        plans: list[_Plan] = []
        unevaluated: list[tuple[int, str]] = []
        for mv in mlflow_versions:
            with mlflow_errors(where):
                plan = _plan(client, mv, Path(tmp) / str(mv.version))
            if isinstance(plan, str):
                unevaluated.append((int(mv.version), plan))
            else:
                plans.append(plan)
        if unevaluated and not skip_unevaluated:
            listed = "; ".join(f"version {n}: {why}" for n, why in unevaluated[:10])
            raise RegistryError(
                f"{len(unevaluated)} version(s) of MLflow's {name!r} carry no Assay evidence ({listed}); Assay's "
                "registry keeps only versions with the evidence they were evaluated with, so nothing was imported",
                where=where,
                fix="evaluate the model with Assay first: `assay evaluate MODEL --data DATA --out BUNDLE` and "
                    f"`assay registry register {name} MODEL --evidence BUNDLE` (then `assay registry export-mlflow "
                    f"{name}` links it in MLflow), or log the model file and the bundle to the version's run under "
                    f"{MODEL_PATH}/ and {EVIDENCE_PATH}/; or pass --skip-unevaluated to import the other versions")
        known = _assay_versions(registry, name)
        links: list[VersionLink] = []
        for plan in plans:
            v = registry.register(name, plan.model, weights=plan.weights, evidence=plan.evidence,
                                  message=plan.message, tags=plan.tags, creator=plan.creator)
            links.append(VersionLink(v.version, plan.mlflow_version, created=v.version not in known))
            known.add(v.version)
    notes = [f"MLflow version {n} skipped: {why}" for n, why in unevaluated]
    to_assay = {link.mlflow_version: link.assay_version for link in links}
    alias_links = [_import_alias(registry, name, alias, m, to_assay.get(m), where, n_bootstrap, seed, actor)
                   for alias, m in sorted(mlflow_aliases.items())]
    held = set(registry.aliases(name).values()) if links else set()
    for plan in plans:
        number = to_assay[plan.mlflow_version]
        if plan.archived is None or registry.version(name, number).archived:
            continue
        if number in held:
            notes.append(f"{name}@{number} is archived in MLflow's copy but holds an alias here: not archived")
            continue
        registry.archive(name, number, reason=plan.archived, actor=actor)
        notes.append(f"{name}@{number} archived ({plan.archived})")
    return Transfer(name, where, links, alias_links, notes)


def _assay_versions(registry: Registry, name: str) -> set[int]:
    try:
        return {v.version for v in registry.versions(name)}
    except RegistryError:  # a name new to this registry
        return set()


def _import_alias(registry: Registry, name: str, alias: str, mlflow_version: int, version: int | None, where: str,
                  n_bootstrap: int, seed: int, actor: str | None) -> AliasLink:
    """Point Assay's ``alias`` where MLflow's points (see the module docstring), or say why not."""
    from assay.registry.promotion import promote

    if version is None:
        return AliasLink(alias, None, mlflow_version, "skipped",
                         f"MLflow version {mlflow_version} was not imported (it carries no Assay evidence)")
    try:
        check_alias(alias)
    except RegistryError:
        return AliasLink(alias, version, mlflow_version, "skipped",
                         "Assay alias names allow letters, digits, '.', '_' and '-', and not only digits")
    if registry.version(name, version).archived:
        return AliasLink(alias, version, mlflow_version, "skipped", f"{name}@{version} is archived in Assay")
    holder = registry.alias_holder(name, alias)
    if holder == version:
        return AliasLink(alias, version, mlflow_version, "unchanged")
    reason = f"imported from MLflow ({where}): {name}@{alias} is MLflow version {mlflow_version}"
    result = promote(registry, name, version, alias, force=holder is not None, reason=reason,
                     n_bootstrap=n_bootstrap, seed=seed, actor=actor)
    if holder is None:
        return AliasLink(alias, version, mlflow_version, "set")
    verdict = result.verdict or "not run"
    return AliasLink(alias, version, mlflow_version, "forced",
                     f"was version {holder}; moved as MLflow had it, gate {verdict}")


def _plan(client: MlflowClient, mv: MlflowVersion, dest: Path) -> _Plan | str:
    """Download the Assay files of one MLflow version and check them (the bundle is Assay's and of this model);
    a string says why the version has none."""
    from assay.evidence.bundle import read_evidence
    from assay.models.formats import format_for_file
    from assay.registry.identity import bundle_files, model_files

    version = int(mv.version)
    tags = dict(mv.tags or {})
    if not mv.run_id:
        return "it has no run, where Assay's files would be"
    listed = {f.path for f in client.list_artifacts(mv.run_id, "assay")}
    if EVIDENCE_PATH not in listed:
        return f"its run holds no Assay evidence bundle ({EVIDENCE_PATH}/)"
    if MODEL_PATH not in listed:
        return (f"its run holds an Assay bundle but no model file Assay can load ({MODEL_PATH}/): a bundle of the "
                "MLflow evaluator plugin is of the MLflow model, which Assay's registry cannot store")
    dest.mkdir(parents=True)
    with _no_progress_bar():
        evidence = Path(client.download_artifacts(mv.run_id, EVIDENCE_PATH, str(dest)))
        model_dir = Path(client.download_artifacts(mv.run_id, MODEL_PATH, str(dest)))
    where = f"MLflow version {version} (run {mv.run_id})"
    main = tags.get(TAG_FILE) or _only_model_file(model_dir, format_for_file)
    if main is None or not (model_dir / main).is_file():
        raise RegistryError(f"{where} holds no model file Assay can load in {MODEL_PATH}/", where=where,
                            fix=f"log one .onnx, .pt or .pt2 file there (or tag the version {TAG_FILE}=FILE)")
    factory = tags.get(TAG_FACTORY)
    model, weights = (factory, str(model_dir / main)) if factory else (str(model_dir / main), None)
    try:
        ev = read_evidence(evidence)
        bundle_files(evidence)
        sha = model_files(model, weights).sha256
    except RegistryError:
        raise
    except UserError as exc:  # a DataError / ModelError (unreadable bundle or model file) of this version
        raise RegistryError(f"{where}: {exc.what}", where=where,
                            fix="re-export the version from Assay, or log a bundle `assay evaluate` wrote") from None
    if ev.model.sha256 != sha:
        raise RegistryError(f"{where}: its evidence bundle is of another model (sha256 {ev.model.sha256[:12]}..., "
                            f"the model file hashes to {sha[:12]}...)", where=where,
                            fix="log the bundle that `assay evaluate` wrote for this model file")
    tag_values = {key[len(TAG_PREFIX):]: value for key, value in tags.items() if key.startswith(TAG_PREFIX)}
    for key in tag_values:
        check_name(key, what=f"tag name (MLflow tag {TAG_PREFIX}{key} of {where})")
    return _Plan(mlflow_version=version, model=model, weights=weights, evidence=evidence,
                 message=(mv.description or "").strip() or None, tags=tag_values,
                 creator=tags.get(TAG_CREATOR) or None, archived=tags.get(TAG_ARCHIVED))


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow's download progress bars (one per folder, on stderr) off while Assay downloads."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _only_model_file(folder: Path, format_for_file: Any) -> str | None:
    """The one file in ``folder`` Assay can load by its extension, or None (none, or several)."""
    found = [p.name for p in sorted(folder.iterdir()) if p.is_file() and format_for_file(p) is not None]
    return found[0] if len(found) == 1 else None
