#!/usr/bin/env python3
"""Fuzz the hostile-input properties for a while: ``make fuzz`` (``--seconds N``, default 300).

Two engines share the budget:

atheris     coverage-guided fuzzing (libFuzzer) of the pure parsers, when atheris is installed
            (``pip install atheris``): the ``check_*`` properties of tests/test_hostile_parsers.py
            driven by raw bytes — certificate files, Subject Directory Attributes, a card
            carrying fuzzed SDA, identifier text, form answers. One process per target, seeded
            with tests/vectors/gpki; ``--atheris-share`` of the budget (0.4), split evenly.
hypothesis  every property of tests/test_hostile_*.py (parsers and HTTP) under the
            ``swreg-hostile-fuzz`` profile: no example database, each property's CI count times
            a scale. A first round at scale 1 measures a round; the rest of the budget goes to
            one round at the scale that fits (``--scale`` fixes it instead).

It prints what each target and property covered (executions or examples, coverage, rate) and
exits 1 on a finding (atheris keeps the input under ``--artifacts``; Hypothesis prints the
falsifying example and its ``@reproduce_failure`` blob), 2 on a usage error, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROPERTY_FILES = ("tests/test_hostile_parsers.py", "tests/test_hostile_http.py")
VECTORS = ROOT / "tests" / "vectors" / "gpki"
ATHERIS_TARGETS = ("certificate", "sda", "card_sda", "identifiers", "forms")


# -- the atheris harness (runs in a child process, one target each) ----------------------------


def _harness(target: str) -> Callable[[bytes], None]:
    """``TestOneInput`` of ``target``: raw bytes → one of the parser properties."""
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["engine"]):
        import engine  # noqa: F401  (instrumented: every engine module it imports)
    from tests import test_hostile_parsers as properties

    if target == "certificate":
        return properties.check_certificate_bytes
    if target == "sda":
        return properties.check_sda_bytes
    if target == "card_sda":
        from datetime import UTC, datetime

        from engine.testing.pki import TestPKI

        pki = TestPKI.create(datetime.now(UTC))
        return lambda data: properties.check_card_with_sda(pki, data)
    if target == "identifiers":

        def identifiers(data: bytes) -> None:
            provider = atheris.FuzzedDataProvider(data)
            names = properties.FIELD_NAMES
            name = names[provider.ConsumeIntInRange(0, len(names) - 1)]
            text = provider.ConsumeUnicode(64)  # surrogates included
            properties.check_identifier_text(text)
            properties.check_field_text(name, text)

        return identifiers
    if target == "forms":

        def forms(data: bytes) -> None:
            provider = atheris.FuzzedDataProvider(data)
            choice = provider.ConsumeIntInRange(0, len(properties.FORMS) - 1)
            form, answers = properties.FORMS[choice]
            hostile = dict(answers)
            for name in sorted(form.model_fields):
                hostile[name] = _json_value(provider, hostile.get(name))
            properties.check_form(form, hostile)

        return forms
    raise SystemExit(f"unknown atheris target {target!r}: {', '.join(ATHERIS_TARGETS)}")


def _json_value(provider: Any, valid: object) -> object:
    """A JSON value for one field: the valid one, text, a number, null, a list or an object."""
    kind = provider.ConsumeIntInRange(0, 7)
    if kind <= 2:
        return valid
    if kind <= 4:
        return provider.ConsumeUnicode(provider.ConsumeIntInRange(0, 80))
    if kind == 5:
        return provider.ConsumeInt(9)
    if kind == 6:
        return None
    return [provider.ConsumeUnicode(8)] if provider.ConsumeBool() else {"a": valid}


def _run_harness(target: str, libfuzzer_args: Sequence[str]) -> None:
    import atheris

    test_one_input = _harness(target)
    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


# -- the orchestration -------------------------------------------------------------------------


@dataclass
class Report:
    """What ran, for the summary; ``findings`` makes the exit status."""

    lines: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def _seed_corpus(target: str, directory: Path) -> None:
    """Real GPKI certificates (and their SDA bytes) as the first inputs."""
    directory.mkdir(parents=True, exist_ok=True)
    if target not in ("certificate", "sda", "card_sda"):
        return
    from cryptography import x509

    for index, path in enumerate(sorted(VECTORS.glob("*.cer"))):
        data = path.read_bytes()
        if target == "certificate":
            (directory / f"seed-{index}").write_bytes(data)
            continue
        try:
            certificate = x509.load_der_x509_certificate(data)
            extension = certificate.extensions.get_extension_for_oid(
                x509.ObjectIdentifier("2.5.29.9")
            )
        except (ValueError, x509.ExtensionNotFound):
            continue
        value = extension.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
        (directory / f"seed-{index}").write_bytes(raw)


_STAT = re.compile(r"stat::(\w+):\s*(\d+)")
_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def run_atheris(seconds: float, artifacts: Path, work: Path, report: Report) -> None:
    per_target = max(5, int(seconds / len(ATHERIS_TARGETS)))
    report.lines.append(f"atheris (libFuzzer, engine.* instrumented), {per_target} s per target:")
    for target in ATHERIS_TARGETS:
        corpus = work / f"corpus-{target}"
        _seed_corpus(target, corpus)
        command = [
            sys.executable, __file__, "--atheris-target", target, "--",
            f"-max_total_time={per_target}", "-print_final_stats=1", "-timeout=10",
            "-max_len=8192", "-rss_limit_mb=3072", f"-artifact_prefix={artifacts}/{target}-",
            str(corpus),
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        output = done.stdout + done.stderr
        stats = {k: int(v) for k, v in _STAT.findall(output)}
        coverage = _COVERAGE.findall(output)
        runs = stats.get("number_of_executed_units", 0)
        cov = f"cov {coverage[-1][0]}, features {coverage[-1][1]}" if coverage else "cov ?"
        report.lines.append(
            f"  {target:<12} {runs:>9} executions in {elapsed:5.1f} s "
            f"({stats.get('average_exec_per_sec', 0):>6}/s), {cov}, "
            f"corpus {len(list(corpus.iterdir()))}"
        )
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-40:])
            report.findings.append(f"atheris {target} (exit {done.returncode}):\n{tail}")
            return


_TEST = re.compile(r"^(tests/\S+::\S+):$")
_PHASE = re.compile(r"during (\w+) phase \(([\d.]+) seconds\)")
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")


@dataclass
class PropertyRun:
    examples: int = 0
    invalid: int = 0
    seconds: float = 0.0


def _statistics(output: str, into: dict[str, PropertyRun]) -> None:
    current: PropertyRun | None = None
    for line in output.splitlines():
        if match := _TEST.match(line.strip()):
            current = into.setdefault(match.group(1).split("::")[1], PropertyRun())
        elif current is not None and (match := _PHASE.search(line)):
            current.seconds += float(match.group(2))
        elif current is not None and (match := _CASES.search(line)):
            current.examples += int(match.group(1)) + int(match.group(2))
            current.invalid += int(match.group(3))


def _pytest_round(scale: int) -> tuple[int, str, float]:
    environment = {
        **os.environ,
        "SWREG_HYPOTHESIS_PROFILE": "swreg-hostile-fuzz",
        "SWREG_FUZZ_SCALE": str(scale),
    }
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not pcsc",
        "--hypothesis-show-statistics", "-x", *PROPERTY_FILES,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def run_hypothesis(seconds: float, fixed_scale: int | None, report: Report) -> None:
    deadline = time.monotonic() + seconds
    runs: dict[str, PropertyRun] = {}
    rounds: list[str] = []
    scale = fixed_scale or 1
    while True:
        status, output, elapsed = _pytest_round(scale)
        rounds.append(f"scale {scale}: {elapsed:.0f} s")
        _statistics(output, runs)
        if status != 0:
            report.findings.append(f"hypothesis (pytest exit {status}):\n{output[-6000:]}")
            break
        remaining = deadline - time.monotonic()
        per_unit = elapsed / scale
        if remaining < per_unit:
            break
        scale = fixed_scale or max(1, int(remaining / per_unit))
    total = sum(r.examples for r in runs.values())
    busy = sum(r.seconds for r in runs.values())
    report.lines.append(f"hypothesis, swreg-hostile-fuzz profile, rounds: {'; '.join(rounds)}")
    for name, run in sorted(runs.items()):
        rate = run.examples / run.seconds if run.seconds else 0.0
        report.lines.append(
            f"  {name:<72} {run.examples:>7} examples {run.seconds:7.1f} s {rate:8.0f}/s"
            + (f" ({run.invalid} invalid)" if run.invalid else "")
        )
    rate = total / busy if busy else 0.0
    report.lines.append(f"  total: {len(runs)} properties, {total} examples, {rate:.0f}/s")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--atheris-target"]:
        target, passthrough = arguments[1], arguments[3:] if arguments[2:3] == ["--"] else []
        _run_harness(target, passthrough)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="total budget (300)")
    parser.add_argument(
        "--engine", choices=("auto", "atheris", "hypothesis"), default="auto",
        help="auto: atheris when installed, then hypothesis",
    )  # fmt: skip
    parser.add_argument("--atheris-share", type=float, default=0.4)
    parser.add_argument("--scale", type=int, default=None, help="fix the Hypothesis scale")
    parser.add_argument("--artifacts", type=Path, default=None, help="where findings are kept")
    options = parser.parse_args(arguments)
    if options.seconds <= 0 or not 0 <= options.atheris_share <= 1:
        parser.error("--seconds must be positive and --atheris-share within 0..1")

    try:
        import atheris  # noqa: F401
    except ImportError:
        have_atheris = False
    else:
        have_atheris = True
    if options.engine == "atheris" and not have_atheris:
        parser.error("atheris is not installed (pip install atheris)")
    use_atheris = have_atheris and options.engine in ("auto", "atheris")
    use_hypothesis = options.engine in ("auto", "hypothesis")

    report = Report()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="swreg-fuzz-"))
    artifacts = options.artifacts or work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        if use_atheris:
            share = options.seconds * (options.atheris_share if use_hypothesis else 1.0)
            run_atheris(share, artifacts, work, report)
        elif options.engine == "auto":
            report.lines.append("atheris not installed: Hypothesis only")
        if use_hypothesis and not report.findings:
            remaining = options.seconds - (time.monotonic() - started)
            run_hypothesis(max(remaining, 1.0), options.scale, report)
    finally:
        kept = any(artifacts.iterdir())
        if not kept and options.artifacts is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report.lines))
    print(f"fuzzed for {time.monotonic() - started:.0f} s")
    if report.findings:
        print("\nFINDINGS", *report.findings, sep="\n\n", file=sys.stderr)
        if kept:
            print(f"crashing inputs kept in {artifacts}", file=sys.stderr)
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
