"""Regenerate RELIABILITY.md's attack table from the last test run's outcomes.

    .venv/bin/python -m pytest -m attack        # or the whole suite; writes test-artifacts/security/attacks.json
    .venv/bin/python tests/security_report.py   # rewrites the table between the markers in RELIABILITY.md

Each row is one ``@pytest.mark.attack(ID, description)`` test: what it tried, whether the service refused
it (the test passed), and what the test recorded about the outcome (``record_property("outcome", ...)``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "test-artifacts" / "security" / "attacks.json"
REPORT = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- attack-table:begin -->", "<!-- attack-table:end -->"


def _order(attack_id: str) -> tuple[int, str]:
    return (int(attack_id), "") if attack_id.isdigit() else (1000, attack_id)


def render(rows: list[dict]) -> str:
    lines = ["| # | attack | result | what the test saw | test |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (_order(r["id"]), r["test"])):
        test = row["test"].replace("tests/", "")
        lines.append(f"| {row['id']} | {row['attack']} | **{row.get('result', 'not run')}** | "
                     f"{row.get('outcome', '')} | `{test}` |")
    return "\n".join(lines)


def main() -> int:
    rows = json.loads(RESULTS.read_text())
    text = REPORT.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"error: {REPORT} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    REPORT.write_text(pattern.sub(lambda _: f"{BEGIN}\n{render(rows)}\n{END}", text))
    failed = [row["test"] for row in rows if row.get("result") != "held"]
    print(f"{len(rows)} attack tests, {len(rows) - len(failed)} held" + (f"; did not hold: {failed}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
