"""The data audit (``assay audit``): duplicates and test->train leakage with the accuracy inflation it causes,
label issues, data integrity and the datasheet, as an evidence bundle with a list of flagged items.

:func:`run_audit` runs it and returns an :class:`AuditRun` (evidence + flagged items); :func:`write_audit`
writes the bundle. The finders are importable on their own from their modules (``assay.audit.duplicates``,
``.leakage``, ``.embeddings``, ``.ann``, ``.labels``, ``.integrity``, ``.pii``); ``assay.audit.planting``
plants known issues into data to measure the audit's own precision and recall.
"""

from assay.audit.run import (
    FLAGGED_COLUMNS,
    AuditRun,
    AuditSettings,
    DatasheetInput,
    audit_inputs,
    check_compatible,
    datasheet_input,
    flagged_summary,
    read_pred_probs,
    run_audit,
    write_audit,
)

__all__ = [
    "FLAGGED_COLUMNS",
    "AuditRun",
    "AuditSettings",
    "DatasheetInput",
    "audit_inputs",
    "check_compatible",
    "datasheet_input",
    "flagged_summary",
    "read_pred_probs",
    "run_audit",
    "write_audit",
]
