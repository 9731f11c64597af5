"""The labelling queue of ``assay estimate``: the CSV a labeller fills in, the design record beside it, and the
labels read back, checked whole.

**Queue** (:func:`write_queue`): ``QUEUE.csv`` with the columns of :data:`QUEUE_COLUMNS`: ``row`` (the item's
index in the pool), ``id`` (the pool's id of the item), ``label`` (blank: the labeller writes a class name or
index), ``draws`` (how many of the design's draws fell on the item; one label serves them all) and
``probability`` (its sampling probability ``q``). The model's prediction is left out on purpose: a labeller who
sees it tends to agree with it. Beside it, ``QUEUE.csv.json`` (:func:`design_path`) records the design the
estimate needs and the checks that keep it honest: the model's sha256, the pool's fingerprint (inputs and ids,
not labels) and size, the seed, the proposal rule and defensive share, each queued item's probability, draws,
centre and the model's prediction, and the pool mean of the centres. The estimate reads the probabilities from
this record, not from the CSV, so an edited CSV cannot change the design.

**Labels** (:func:`read_queue_labels`): a UTF-8 CSV with ``row`` and ``label`` columns (others, such as the
queue's, are ignored; an ``id`` column is checked against the pool's ids). Every queued row must carry a label
(a missing one would bias the estimate), no other row may appear, labels are class names or indices, a row
labelled twice must agree; every problem is a DataError naming the line, raised before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DataError

__all__ = [
    "QUEUE_COLUMNS",
    "QUEUE_FORMAT",
    "LabelQueue",
    "class_index",
    "design_path",
    "is_design_record",
    "is_estimate_queue",
    "read_csv_text",
    "read_queue",
    "read_queue_labels",
    "write_queue",
]

#: Columns of the queue CSV, in order; ``label`` is left blank for the labeller.
QUEUE_COLUMNS = ("row", "id", "label", "draws", "probability")
#: The ``format`` of the design record.
QUEUE_FORMAT = "assay.estimate.queue/1"
_MAX_LABEL_CHARS = 256
_MAX_BYTES = 256 * 2**20


def design_path(queue: str | os.PathLike[str]) -> Path:
    """Where the design record of the queue CSV ``queue`` lies: ``QUEUE.csv.json`` beside it."""
    path = Path(queue)
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class LabelQueue:
    """A labelling design and its queue: pool ``rows`` to label (ascending) with their ``ids``, ``draws``,
    sampling probabilities ``q``, ``centre`` and the model's ``predicted`` class; ``design`` holds the rest
    (format, model_sha256, pool_fingerprint, population, seed, rule, defensive, draws_total, centre_mean,
    class_names, label_budget, model, pool)."""

    rows: np.ndarray
    ids: np.ndarray
    draws: np.ndarray
    q: np.ndarray
    centre: np.ndarray
    predicted: np.ndarray
    design: dict[str, Any]

    @property
    def population(self) -> int:
        return int(self.design["population"])


def write_queue(queue: LabelQueue, path: str | os.PathLike[str]) -> Path:
    """The queue CSV and its design record (:func:`design_path`), each written to a temporary sibling and renamed
    into place (the record first: a CSV is never left without it)."""
    from assay.report.formatting import write_text_atomic

    record = {**queue.design, "format": QUEUE_FORMAT, "items": {
        "row": queue.rows.tolist(), "id": [str(i) for i in queue.ids], "draws": queue.draws.tolist(),
        "probability": queue.q.tolist(), "centre": queue.centre.tolist(), "predicted": queue.predicted.tolist()}}
    write_text_atomic(design_path(path), json.dumps(record, indent=1, allow_nan=False))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(QUEUE_COLUMNS)
    for row, item, k, q in zip(queue.rows, queue.ids, queue.draws, queue.q, strict=True):
        writer.writerow([int(row), str(item), "", int(k), f"{float(q):.10g}"])
    return write_text_atomic(path, buffer.getvalue())


def is_estimate_queue(path: Path) -> bool:
    """True for a CSV :func:`write_queue` wrote (its header line is :data:`QUEUE_COLUMNS`)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            first = handle.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return first.rstrip("\r\n") == ",".join(QUEUE_COLUMNS)


def is_design_record(path: Path) -> bool:
    """True for a design record :func:`write_queue` wrote (JSON whose ``format`` is :data:`QUEUE_FORMAT`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(256)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("{") and f'"format": "{QUEUE_FORMAT}"' in path.read_text(encoding="utf-8")


def read_queue(queue: str | os.PathLike[str]) -> LabelQueue:
    """The design :func:`write_queue` recorded beside the queue CSV ``queue``; a DataError when it is missing or
    not one."""
    record_path = design_path(queue)
    where = str(record_path)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"the queue's design record {record_path.name} is not beside {Path(queue).name}",
                        where=where, fix="keep the .csv.json file `assay estimate --queue` wrote next to the queue, "
                        "or give the original queue with --queue and the filled-in copy with --labels") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the queue's design record cannot be read ({exc})", where=where,
                        fix="write the queue again with `assay estimate ... --queue`") from None
    try:
        if not isinstance(record, dict) or record.get("format") != QUEUE_FORMAT:
            raise ValueError("not an assay estimate queue record")
        items = record["items"]
        rows = np.asarray(items["row"], dtype=np.int64)
        q = np.asarray(items["probability"], dtype=np.float64)
        queue_obj = LabelQueue(rows=rows, ids=np.asarray(items["id"], dtype=str),
                               draws=np.asarray(items["draws"], dtype=np.int64), q=q,
                               centre=np.asarray(items["centre"], dtype=np.float64),
                               predicted=np.asarray(items["predicted"], dtype=np.int64),
                               design={k: v for k, v in record.items() if k != "items"})
        n = int(queue_obj.design["population"])
        lengths = {len(a) for a in (rows, q, queue_obj.ids, queue_obj.draws, queue_obj.centre, queue_obj.predicted)}
        if (len(lengths) != 1 or not len(rows) or (rows < 0).any() or (rows >= n).any()
                or len(np.unique(rows)) != len(rows) or (q <= 0).any() or (q > 1).any() or (queue_obj.draws < 1).any()):
            raise ValueError("inconsistent items")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{record_path.name} is not a design record of `assay estimate` ({exc})", where=where,
                        fix="write the queue again with `assay estimate ... --queue`") from None
    return queue_obj


def class_index(text: str, num_classes: int | None, class_names: Sequence[str] | None, where: str) -> int:
    """A class name (when names are known) or an integer index in [0, num_classes) (any index >= 0 when
    ``num_classes`` is None). Shared with the feedback loop's label files (monitor/labeling.py)."""
    names = [str(n) for n in class_names or []]
    if text in names:
        return names.index(text)
    try:
        value = int(text)
    except ValueError:
        known = f"one of {names[:10]}{' ...' if len(names) > 10 else ''} or an index" if names else "an integer index"
        raise DataError(f"label {text[:80]!r} is not a class of the model", where=where, fix=f"write {known}") from None
    if value < 0 or (num_classes is not None and value >= num_classes):
        raise DataError(f"label {value} is outside the model's classes 0..{(num_classes or 1) - 1}", where=where,
                        fix=f"write a class index in [0, {(num_classes or 1) - 1}]"
                            + (" or a class name" if names else ""))
    return value


def read_csv_text(path: Path, *, what: str, columns: str, max_bytes: int, too_big_fix: str) -> str:
    """The text of a UTF-8 label CSV (a BOM dropped), every way it can be unreadable a DataError naming the file
    (too large, missing, a folder, not UTF-8 -- with the line --, unreadable, NUL bytes). ``what`` names the file
    in the fixes ("the labels CSV"), ``columns`` its expected columns. Shared with monitor/labeling.py."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"the label file is {size:,} bytes (at most {max_bytes:,})", where=where, fix=too_big_fix)
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError("no such file", where=where, fix=f"check the path to {what}") from None
    except IsADirectoryError:
        raise DataError("this is a folder, not a CSV file", where=where, fix=f"give {what}") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise DataError(f"the file is not UTF-8 text (byte {exc.start:,}, line {line})", where=where,
                        fix="save the CSV as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)") from None
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror})", where=where, fix="check the path and permissions") \
            from None
    if "\x00" in text:
        raise DataError("the file contains NUL characters: not a CSV text file", where=where,
                        fix=f"give {what} (columns {columns})")
    return text


def read_queue_labels(path: str | os.PathLike[str], queue: LabelQueue, *, num_classes: int,
                      class_names: Sequence[str] | None = None) -> np.ndarray:
    """The label of every queued row, in the order of ``queue.rows``, from the filled-in CSV ``path`` (see the
    module docstring: checked whole, every problem a DataError naming the line)."""
    path = Path(path)
    where = str(path)
    reader = csv.reader(io.StringIO(read_csv_text(path, what="the filled-in queue CSV", columns="row,label",
                                                 max_bytes=_MAX_BYTES,
                                                 too_big_fix="give the filled-in queue, one line per queued item"),
                                   newline=""))
    position = {int(r): i for i, r in enumerate(queue.rows)}
    labels = np.full(len(queue.rows), -1, dtype=np.int64)
    first_line = np.zeros(len(queue.rows), dtype=np.int64)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError("the file is empty", where=where, fix="give the filled-in queue (header row,id,label,...)")
        columns = [h.strip() for h in header]
        missing = [c for c in ("row", "label") if c not in columns]
        if missing:
            raise DataError(f"the CSV has no column {' or '.join(repr(c) for c in missing)} (columns: "
                            f"{[c[:40] for c in columns[:12]]})", where=where,
                            fix="keep the queue's header line (row,id,label,...) and fill in the label column")
        at = {c: columns.index(c) for c in ("row", "label", "id") if c in columns}
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) < len(columns):
                raise DataError(f"line {line} has {len(values)} fields, the header {len(columns)}",
                                where=f"{where}:{line}", fix="give every line the header's columns")
            row_text = values[at["row"]].strip()
            try:
                row = int(row_text)
            except ValueError:
                raise DataError(f"line {line}: row {row_text[:40]!r} is not an integer", where=f"{where}:{line}",
                                fix="keep the row column as the queue wrote it") from None
            if row not in position:
                raise DataError(f"line {line}: row {row} is not in the queue (the design drew {len(queue.rows)} "
                                "other rows)", where=f"{where}:{line}",
                                fix="label only the rows the queue lists: the estimate is valid for those alone")
            i = position[row]
            if "id" in at and values[at["id"]].strip() != str(queue.ids[i]):
                raise DataError(f"line {line}: row {row} has id {values[at['id']].strip()[:80]!r}, the queue "
                                f"{str(queue.ids[i])[:80]!r}", where=f"{where}:{line}",
                                fix="keep the row and id columns as the queue wrote them")
            label_text = values[at["label"]].strip()
            if not label_text:
                continue
            if len(label_text) > _MAX_LABEL_CHARS:
                raise DataError(f"line {line}: the label is {len(label_text)} characters long",
                                where=f"{where}:{line}", fix="write a class name or index")
            label = class_index(label_text, num_classes, class_names, f"{where}:{line}")
            if labels[i] >= 0 and labels[i] != label:
                raise DataError(f"row {row} is labelled {labels[i]} on line {first_line[i]} and {label} on line "
                                f"{line}", where=f"{where}:{line}", fix="keep one label per row")
            if labels[i] < 0:
                labels[i], first_line[i] = label, line
    except csv.Error as exc:
        raise DataError(f"not a readable CSV file ({exc}, line {reader.line_num})", where=where,
                        fix="give the filled-in queue as a comma-separated file") from None
    unlabelled = queue.rows[labels < 0]
    if len(unlabelled):
        shown = ", ".join(str(int(r)) for r in unlabelled[:10]) + (" ..." if len(unlabelled) > 10 else "")
        raise DataError(f"{len(unlabelled)} of the {len(queue.rows)} queued rows have no label (rows {shown})",
                        where=where, fix="label every queued row: the estimate needs all of them (leaving out the "
                        "hard ones would bias it upwards)")
    return labels
