#!/usr/bin/env python3
"""Verify a swreg audit export (``swreg audit export``) with the Python standard library only.

    python3 verify-audit-export.py audit.jsonl [--expect-last-hash HEX] [--json]

An export is JSON Lines, one audit row per line, oldest first. Each line holds ``seq``, ``at``,
``actor``, ``event``, ``registration_id``, ``from_state``, ``to_state``, ``applicant_type``,
``workflow_hash``, ``diff``, ``prev_hash`` and ``hash``, where

    hash = sha256(json.dumps({every key above but hash}, sort_keys=True,
                             separators=(",", ":"), ensure_ascii=False).encode("utf-8"))

and ``prev_hash`` is the previous line's ``hash`` (64 zeros for the first row, seq 1). The
script recomputes the chain and names the first line that fails: an edited line (its hash no
longer matches), a deleted or moved line (the seq numbers skip or go back, or the link to the
previous line is broken). The chain cannot show that the newest rows were cut off: compare the
last hash with one kept elsewhere (``--expect-last-hash``; ``swreg audit export`` prints it).

Exit status: 0 the export is intact, 1 a line fails (named on stdout), 2 usage or unreadable.
Copy this file anywhere: it imports nothing outside the standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass

HASHED_FIELDS = (
    "seq", "at", "actor", "event", "registration_id", "from_state", "to_state",
    "applicant_type", "workflow_hash", "diff", "prev_hash",
)  # fmt: skip
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class Verdict:
    """``ok``; else ``line`` (1-based) and ``seq`` of the first bad line and ``reason``."""

    ok: bool
    rows: int
    line: int | None = None
    seq: int | None = None
    reason: str | None = None
    last_hash: str | None = None


def entry_hash(record: dict[str, object]) -> str:
    """The SHA-256 hex digest swreg chains for one row."""
    payload = {name: record[name] for name in HASHED_FIELDS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_lines(lines: Iterable[str], *, expect_last_hash: str | None = None) -> Verdict:
    """Walk the export's lines; stop at the first one that breaks the chain."""
    expected_seq, prev_hash, rows = 1, GENESIS_HASH, 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            return Verdict(False, rows, number, None, "blank line")
        rows += 1
        try:
            record = json.loads(text)
        except ValueError:
            return Verdict(False, rows, number, None, "not JSON")
        if not isinstance(record, dict):
            return Verdict(False, rows, number, None, "not a JSON object")
        missing = [k for k in (*HASHED_FIELDS, "hash") if k not in record]
        if missing:
            return Verdict(False, rows, number, None, f"missing {', '.join(missing)}")
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return Verdict(False, rows, number, None, "seq is not a number")
        if seq > expected_seq:
            reason = f"expected seq {expected_seq}, found {seq}: a line was deleted or moved"
            return Verdict(False, rows, number, seq, reason)
        if seq < expected_seq:
            reason = f"expected seq {expected_seq}, found {seq}: a line was moved or repeated"
            return Verdict(False, rows, number, seq, reason)
        if record["prev_hash"] != prev_hash:
            reason = "broken link: prev_hash is not the previous line's hash"
            return Verdict(False, rows, number, seq, reason)
        if entry_hash(record) != record["hash"]:
            reason = "edited: the line does not hash to its hash"
            return Verdict(False, rows, number, seq, reason)
        expected_seq, prev_hash = seq + 1, record["hash"]
    last = prev_hash if rows else None
    if expect_last_hash is not None and last != expect_last_hash:
        reason = "the last hash is not the expected one: rows were cut off or added"
        return Verdict(False, rows, None, None, reason, last)
    return Verdict(True, rows, last_hash=last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a swreg audit export (JSON Lines).")
    parser.add_argument("export", help="the file swreg audit export wrote ('-' for stdin)")
    parser.add_argument("--expect-last-hash", metavar="HEX", help="the last hash kept elsewhere")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        if args.export == "-":
            verdict = verify_lines(sys.stdin, expect_last_hash=args.expect_last_hash)
        else:
            with open(args.export, encoding="utf-8", newline="\n") as handle:
                verdict = verify_lines(handle, expect_last_hash=args.expect_last_hash)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {args.export}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(verdict), ensure_ascii=False))
    elif verdict.ok:
        print(f"intact: {verdict.rows} rows; last hash {verdict.last_hash}")
    else:
        where = f"line {verdict.line}" if verdict.line is not None else "end of export"
        seq = f" (seq {verdict.seq})" if verdict.seq is not None else ""
        print(f"BAD {where}{seq}: {verdict.reason}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
