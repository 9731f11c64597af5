"""Where the monitor's reference comes from: an evaluation bundle folder, or ``NAME@ALIAS`` / ``NAME@VERSION``
of a registered model (its evidence bundle in the registry's artifact store)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay._hashing import file_sha256
from assay.errors import DataError

__all__ = ["MonitorReference", "load_monitor_reference"]

_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}@[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class MonitorReference:
    """A loaded reference with what the snapshot says about it (``info``) and the bundle's clean logits
    (None without predictions.npz)."""

    reference: Any
    info: dict[str, Any] = field(default_factory=dict)
    logits: np.ndarray | None = None
    bundle: Path | None = None


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def load_monitor_reference(spec: str | os.PathLike[str], *, registry: str | None = None,
                           artifacts: str | os.PathLike[str] | None = None) -> MonitorReference:
    """The reference of ``spec``: a bundle folder (or its reference.npz), or a registry reference resolved in
    ``registry`` (default ASSAY_REGISTRY or .assay/registry.db), whose alias history goes to the snapshot."""
    from assay.evidence.bundle import read_bundle
    from assay.reference import REFERENCE_FILE, Reference

    text = os.fspath(spec)
    model: dict[str, Any] = {"name": None, "version": None, "alias": None}
    history: list[dict[str, Any]] = []
    if not os.path.lexists(text) and _REF.fullmatch(text):
        from assay.errors import RegistryError
        from assay.registry import open_registry
        from assay.registry.db import resolve_url

        _, file = resolve_url(registry)
        if file is not None and not file.exists():  # monitoring only reads: it never creates an empty registry
            raise RegistryError(f"no registry at {file} to resolve {text}", where=str(file),
                                fix="give --registry (or ASSAY_REGISTRY), or pass the evaluation bundle folder")
        reg = open_registry(registry, artifacts=artifacts)
        try:
            version = reg.resolve(text)
            folder = Path(reg.evidence_dir(version))
            name, _, which = text.partition("@")
            model = {"name": version.name, "version": str(version.version),
                     "alias": None if which.isdigit() else which}
            history = [{"time": m.created_at, "alias": m.alias, "version": str(m.to_version), "action": m.action,
                        "actor": m.actor} for m in reg.history(name)]
        finally:
            reg.close()
    else:
        folder = Path(text)
        if not folder.exists():
            raise DataError("no evaluation bundle or reference file here", where=text,
                            fix="give the folder `assay evaluate` wrote (it holds reference.npz), or NAME@ALIAS of a "
                                "registered model")
    if folder.is_file():
        reference = Reference.load(folder)
        return MonitorReference(reference, {"source": text, "sha256": _sha256(folder), "model": model,
                                            "alias_history": history})
    if not (folder / REFERENCE_FILE).exists():
        raise DataError(f"the bundle has no {REFERENCE_FILE}", where=str(folder),
                        fix="re-run `assay evaluate` with this version of Assay to write the monitoring reference")
    logits = None
    if (folder / "evidence.json").exists():
        bundle = read_bundle(folder)
        if bundle.reference is None:
            raise DataError(f"the bundle has no readable {REFERENCE_FILE}", where=str(folder),
                            fix="re-run `assay evaluate` with this version of Assay")
        reference = bundle.reference
        if bundle.predictions is not None:
            clean = bundle.predictions.get("logits")
            logits = None if clean is None else np.asarray(clean)
        if model["version"] is None:
            model["version"] = bundle.evidence.model.sha256[:12]
    else:
        reference = Reference.load(folder)
    info = {"source": text, "sha256": _sha256(folder / REFERENCE_FILE), "model": model, "alias_history": history}
    return MonitorReference(reference, info, logits if logits is not None and len(logits) == reference.n else None,
                            folder)


