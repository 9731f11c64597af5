"""Screenshots of sections of an Assay report page, by element id, in headless Chromium (Debian's ``chromium``).

For before/after pictures of a change to the report (the issue note shows the demo report's OOD and
slices sections)::

    python docs/screenshots.py REPORT_DIR_OR_HTML s-ood s-slices --out shots/ --prefix before-
    # -> shots/before-ood.png, shots/before-slices.png (the "s-" of a section id is dropped)

Each id is a section (``s-<name>``, e.g. ``s-ood``) or any other element id of the page (``verdict``,
``s-ood.plots.roc_msp``). The page is laid out ``--width`` CSS px wide (1400 by default) and each element
is captured whole, also where it is taller than the window. Prints one line per file with the element's
size. Exit 2 when the report or an id is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chromium import Chromium, available  # the CDP helper lives with the browser tests

#: Page-coordinate box (CSS px) of the element with id ``ID`` (JSON-encoded into the expression).
_BOX = """(() => { const e = document.getElementById(ID); if (!e) return null;
  const b = e.getBoundingClientRect();
  return {x: b.left + scrollX, y: b.top + scrollY, width: b.width, height: b.height}; })()"""


def _report_file(path: Path) -> Path:
    return path / "report.html" if path.is_dir() else path


def shoot(report: Path, ids: list[str], out: Path, *, width: int = 1400, prefix: str = "",
          margin: int = 8) -> list[Path]:
    """One PNG per element id of ``report`` (an HTML file or a folder holding report.html), written to
    ``out/<prefix><id without 's-'>.png``; raises ``LookupError`` for an id the page does not have."""
    import json

    page_file = _report_file(report).resolve()
    written = []
    with Chromium() as browser:
        page = browser.new_page(width=width)
        page.goto(page_file.as_uri())
        for element_id in ids:
            found = page.evaluate(_BOX.replace("ID", json.dumps(element_id)))
            if found is None:
                raise LookupError(f"{page_file} has no element with id {element_id!r}")
            clip = {"x": max(found["x"] - margin, 0), "y": max(found["y"] - margin, 0),
                    "width": found["width"] + 2 * margin, "height": found["height"] + 2 * margin}
            name = element_id.removeprefix("s-").replace("/", "_")
            written.append(page.screenshot(out / f"{prefix}{name}.png", clip=clip))
            print(f"{written[-1]}: {element_id} {found['width']:.0f} x {found['height']:.0f} CSS px at width {width}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="report.html, or the folder holding it")
    parser.add_argument("ids", nargs="+", help="element ids, e.g. s-ood s-slices")
    parser.add_argument("--out", type=Path, default=Path("shots"), help="folder for the PNGs (default: shots)")
    parser.add_argument("--prefix", default="", help="file name prefix, e.g. before-")
    parser.add_argument("--width", type=int, default=1400, help="window width in CSS px (default: 1400)")
    args = parser.parse_args(argv)
    if not available():
        print("Error: no chromium at /usr/bin/chromium (set ASSAY_CHROMIUM). Fix: apt-get install chromium",
              file=sys.stderr)
        return 2
    if not _report_file(args.report).is_file():
        print(f"Error: no report at {_report_file(args.report)}. Fix: give report.html or its folder",
              file=sys.stderr)
        return 2
    try:
        shoot(args.report, args.ids, args.out, width=args.width, prefix=args.prefix)
    except LookupError as exc:
        print(f"Error: {exc}. Fix: use the id of a section (s-ood, s-slices, ...)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
