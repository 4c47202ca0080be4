"""List every SPEC rule id and the tests that cite it.

Run from anywhere: ``python tools/spec_coverage.py [--spec ../shared/SPEC.md] [--sections 2,3,4,5,7,8]
[--missing] [--fail-under PCT]``. Standard library only.

Rule ids are read from the product spec: a definition is a list item ``- <ID> `` at the start of a
line (``- R-6 Symbol blacklist: …``) and belongs to the enclosing ``## N. Title`` section.

Tests are read with :mod:`ast` (never imported) from ``tests/**/*.py``: every ``def test_*`` /
``async def test_*`` at module level or inside a ``Test*`` class. A test cites an id *directly*
through its name (``test_r6_three_stop_losses`` → R-6, ``test_e10_…`` → E-10) or its own
docstring (``R-6``, ``E-10``, ranges such as ``R-1..R-3``, ``F-1 … F-5`` or ``F-1 to F-5`` expand
to every id the spec defines in between). A test that cites nothing itself inherits the ids of the
docstring of its ``Test*`` class, or else of its module; those citations are counted apart
("module-level") and do not count as coverage.

Rules the spec defines before any issue builds them sit in :data:`PLANNED`, one visible list:
every report names them, ``--fail-under`` leaves them out, and a planned id that a test already
cites (or that the spec no longer defines) fails the run, so the list cannot go stale. The issue
that builds an id removes it from the list and adds its test.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = PROJECT_ROOT.parent / "shared" / "SPEC.md"
DEFAULT_LETTERS = "SFZROEBTMAL"
EXAMPLES = 3

_SECTION_RE = re.compile(r"^##\s+(\d+)\.\s*(.*?)\s*$")
_DEFINITION_RE = re.compile(r"^- ([A-Z])-(\d+)(?=\s)")
# Separators that turn two ids of the same letter into a range: .., ..., …, en/em dash, "to".
_RANGE_SEP = r"\s*(?:\.\.\.?|…|–|—)\s*|\s+to\s+"
_MAX_RANGE = 50

# Rules SPEC.md defines that are not built yet, with the issue that builds each. Not counted by
# --fail-under; listed in every report. Remove an id here in the commit that adds its test.
PLANNED: dict[str, str] = {
}


@dataclass(frozen=True)
class Rule:
    """One rule id defined in the spec, with the section that defines it."""

    rule_id: str
    section: int
    section_title: str
    line: int


@dataclass(frozen=True)
class TestCitations:
    """The rule ids one test cites: directly (name, own docstring) or inherited (class/module)."""

    nodeid: str
    direct: tuple[str, ...]
    inherited: tuple[str, ...] = ()
    inherited_from: str = ""  # "class", "module" or "" when nothing was inherited


@dataclass
class RuleCoverage:
    """The tests that cite one rule: directly, and only through a class/module docstring."""

    rule: Rule
    direct: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)

    @property
    def cited(self) -> bool:
        """True when at least one test cites the rule directly."""
        return bool(self.direct)


def id_sort_key(rule_id: str) -> tuple[str, int]:
    """Sort key for ids: by letter, then numerically (``R-2`` before ``R-10``)."""
    letter, _, number = rule_id.partition("-")
    return (letter, int(number) if number.isdigit() else 0)


def parse_spec(text: str) -> list[Rule]:
    """Return the rule ids defined in SPEC.md text, in document order, with their section.

    A definition is a line starting with ``- <ID> ``; ids before the first ``## N.`` heading get
    section 0. A repeated definition keeps the first occurrence.
    """
    rules: list[Rule] = []
    seen: set[str] = set()
    section, title = 0, ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        heading = _SECTION_RE.match(line)
        if heading:
            section, title = int(heading.group(1)), heading.group(2)
            continue
        definition = _DEFINITION_RE.match(line)
        if definition:
            rule_id = f"{definition.group(1)}-{int(definition.group(2))}"
            if rule_id not in seen:
                seen.add(rule_id)
                rules.append(Rule(rule_id, section, title, lineno))
    return rules


def load_spec(path: Path) -> list[Rule]:
    """Read and parse a SPEC.md file (see :func:`parse_spec`)."""
    return parse_spec(Path(path).read_text(encoding="utf-8"))


def section_titles(rules: Iterable[Rule], spec_text: str | None = None) -> dict[int, str]:
    """Map section number → title, from the spec text if given (so empty sections appear too)."""
    titles: dict[int, str] = {}
    if spec_text is not None:
        for line in spec_text.splitlines():
            heading = _SECTION_RE.match(line)
            if heading:
                titles.setdefault(int(heading.group(1)), heading.group(2))
    for rule in rules:
        titles.setdefault(rule.section, rule.section_title)
    return dict(sorted(titles.items()))


def _letters_class(letters: str) -> str:
    return "[" + "".join(sorted(set(letters.upper()))) + "]"


def ids_in_text(text: str | None, letters: str = DEFAULT_LETTERS,
                known: set[str] | None = None) -> list[str]:
    """Return the rule ids written in free text (a docstring), in order of first appearance.

    Ids look like ``R-6`` / ``E-10`` (upper case, not glued to other letters or digits). A range
    ``R-1..R-3`` (also ``…``, ``–``, ``—`` or ``to`` between two ids of the same letter) expands to
    R-1, R-2, R-3; when ``known`` is given the ids strictly inside a range are limited to it (so
    ``E-1..E-10`` does not invent E-7).
    """
    if not text:
        return []
    cls = _letters_class(letters)
    one = rf"(?<![A-Za-z0-9_])({cls})-(\d+)(?![0-9])"
    pattern = re.compile(rf"{one}(?:(?:{_RANGE_SEP})(?<![A-Za-z0-9_])\1-(\d+)(?![0-9]))?")
    found: list[str] = []

    def add(rule_id: str) -> None:
        if rule_id not in found:
            found.append(rule_id)

    for match in pattern.finditer(text):
        letter, start = match.group(1), int(match.group(2))
        end = int(match.group(3)) if match.group(3) is not None else None
        add(f"{letter}-{start}")
        if end is None:
            continue
        if start < end <= start + _MAX_RANGE:
            for number in range(start + 1, end):
                inner = f"{letter}-{number}"
                if known is None or inner in known:
                    add(inner)
        add(f"{letter}-{end}")
    return found


def ids_in_name(name: str, letters: str = DEFAULT_LETTERS) -> list[str]:
    """Return the rule ids cited by a test name: ``_r6_`` or a trailing ``_r6`` → ``R-6``.

    Case-insensitive, only for the given id letters; ``test_e10_ladder`` → ``E-10``.
    """
    cls = _letters_class(letters)
    pattern = re.compile(rf"(?<=_)({cls})(\d+)(?=_|$)", re.IGNORECASE)
    found: list[str] = []
    for match in pattern.finditer(name):
        rule_id = f"{match.group(1).upper()}-{int(match.group(2))}"
        if rule_id not in found:
            found.append(rule_id)
    return found


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def scan_test_source(source: str, nodeprefix: str, letters: str = DEFAULT_LETTERS,
                     known: set[str] | None = None) -> list[TestCitations]:
    """Return the citations of every test function in one test module's source.

    ``nodeprefix`` is the module part of the node id (``tests/test_x.py``). Module-level
    ``test*`` functions and methods of (nested) ``Test*`` classes are collected, as pytest does.
    """
    tree = ast.parse(source)
    module_ids = tuple(ids_in_text(ast.get_docstring(tree), letters, known))
    results: list[TestCitations] = []

    def visit(body: Sequence[ast.stmt], path: str, class_ids: tuple[str, ...]) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                own = tuple(ids_in_text(ast.get_docstring(node), letters, known))
                visit(node.body, f"{path}::{node.name}", own or class_ids)
            elif _is_test_function(node):
                direct: list[str] = []
                for rule_id in ids_in_name(node.name, letters) + ids_in_text(
                        ast.get_docstring(node), letters, known):
                    if rule_id not in direct:
                        direct.append(rule_id)
                nodeid = f"{path}::{node.name}"
                if direct:
                    results.append(TestCitations(nodeid, tuple(direct)))
                elif class_ids:
                    results.append(TestCitations(nodeid, (), class_ids, "class"))
                elif module_ids:
                    results.append(TestCitations(nodeid, (), module_ids, "module"))
                else:
                    results.append(TestCitations(nodeid, ()))

    visit(tree.body, nodeprefix, ())
    return results


def collect_tests(root: Path, letters: str = DEFAULT_LETTERS, known: set[str] | None = None,
                  tests_dir: str = "tests") -> list[TestCitations]:
    """Scan ``<root>/<tests_dir>/**/*.py`` and return the citations of every test found.

    Files that do not parse are reported on stderr and skipped.
    """
    root = Path(root)
    results: list[TestCitations] = []
    for path in sorted((root / tests_dir).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        nodeprefix = path.relative_to(root).as_posix()
        try:
            source = path.read_text(encoding="utf-8")
            results.extend(scan_test_source(source, nodeprefix, letters, known))
        except (SyntaxError, UnicodeDecodeError) as exc:
            print(f"warning: skipped {nodeprefix}: {exc}", file=sys.stderr)
    return results


def build_coverage(rules: Iterable[Rule], tests: Iterable[TestCitations]) -> dict[str, RuleCoverage]:
    """Map every spec rule id to the tests citing it (directly and module-level)."""
    coverage = {rule.rule_id: RuleCoverage(rule) for rule in rules}
    for test in tests:
        for rule_id in test.direct:
            if rule_id in coverage:
                coverage[rule_id].direct.append(test.nodeid)
        for rule_id in test.inherited:
            if rule_id in coverage:
                coverage[rule_id].inherited.append(test.nodeid)
    return coverage


def unknown_citations(known: set[str], tests: Iterable[TestCitations]) -> dict[str, list[str]]:
    """Ids cited directly by tests that the spec does not define, with the citing node ids."""
    unknown: dict[str, list[str]] = {}
    for test in tests:
        for rule_id in test.direct:
            if rule_id not in known:
                unknown.setdefault(rule_id, []).append(test.nodeid)
    return dict(sorted(unknown.items(), key=lambda item: id_sort_key(item[0])))


def parse_sections(value: str) -> list[int]:
    """Parse ``2,3,4,5,7,8`` or ``2-5,7,8`` into a sorted list of section numbers."""
    sections: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if sep:
            first, last = int(low), int(high)
            if first > last:
                raise ValueError(f"bad section range {part!r}")
            sections.update(range(first, last + 1))
        else:
            sections.add(int(part))
    if not sections:
        raise ValueError("no section given")
    return sorted(sections)


def format_sections(sections: Iterable[int]) -> str:
    """Compress section numbers into ranges: [2, 3, 4, 5, 7, 8] → ``2-5,7,8``."""
    numbers = sorted(set(sections))
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{numbers[i]}-{numbers[j]}")
        else:
            parts.extend(str(n) for n in numbers[i:j + 1])
        i = j + 1
    return ",".join(parts)


def coverage_figures(coverage: dict[str, RuleCoverage], sections: Iterable[int],
                     planned: Iterable[str] = ()) -> tuple[int, int, float]:
    """Return (cited, total, percent) for the ids of the given sections; 0 ids count as 100 %.

    Ids in ``planned`` (see :data:`PLANNED`) are left out of both counts.
    """
    wanted = set(sections)
    skipped = set(planned)
    selected = [c for c in coverage.values()
                if c.rule.section in wanted and c.rule.rule_id not in skipped]
    cited = sum(1 for c in selected if c.cited)
    total = len(selected)
    percent = 100.0 * cited / total if total else 100.0
    return cited, total, percent


def planned_problems(coverage: dict[str, RuleCoverage], planned: dict[str, str]) -> list[str]:
    """Return why the planned list is stale: ids the spec lacks, ids a test already cites."""
    problems: list[str] = []
    for rule_id in sorted(planned, key=id_sort_key):
        if rule_id not in coverage:
            problems.append(f"{rule_id} is planned but SPEC.md does not define it")
        elif coverage[rule_id].cited:
            problems.append(f"{rule_id} is planned but cited by {coverage[rule_id].direct[0]}: "
                            "remove it from PLANNED in tools/spec_coverage.py")
    return problems


def render_report(coverage: dict[str, RuleCoverage], sections: Sequence[int],
                  titles: dict[int, str], missing_only: bool = False,
                  unknown: dict[str, list[str]] | None = None,
                  planned: dict[str, str] | None = None) -> str:
    """Render the id table, the per-section summary, the planned list and the coverage line.

    ``planned`` maps ids not built yet to the issue that builds them: they are marked in the
    table, listed apart and left out of the per-section and final figures.
    """
    planned = planned or {}
    wanted = set(sections)
    rows = sorted((c for c in coverage.values() if c.rule.section in wanted),
                  key=lambda c: (c.rule.section, c.rule.line))
    if missing_only:
        rows = [c for c in rows if not c.cited]
    lines: list[str] = []
    header = f"{'id':<6} {'section':>7} {'tests':>5} {'module':>6}  examples"
    lines += [header, "-" * len(header)]
    for c in rows:
        if c.direct:
            examples = ", ".join(c.direct[:EXAMPLES])
        elif c.inherited:
            examples = "(module-level only) " + ", ".join(c.inherited[:EXAMPLES])
        else:
            examples = "-"
        if c.rule.rule_id in planned and not c.direct:
            examples = f"(planned: {planned[c.rule.rule_id]})"
        lines.append(f"{c.rule.rule_id:<6} {c.rule.section:>7} {len(c.direct):>5} "
                     f"{len(c.inherited):>6}  {examples}")
    if not rows:
        lines.append("(none)")
    lines.append("")
    lines.append("'tests': tests citing the id in their name or docstring; 'module': tests citing "
                 "nothing themselves that inherit it from their class or module docstring.")
    lines.append("")
    lines.append(f"{'section':>7}  {'cited':>7}  {'%':>6}  title")
    for number in sorted(wanted):
        cited, total, percent = coverage_figures(coverage, [number], planned)
        title = titles.get(number, "(not in spec)")
        lines.append(f"{number:>7}  {f'{cited}/{total}':>7}  {percent:>6.1f}  {title}")
    uncited = [c.rule.rule_id for c in rows if not c.cited and c.rule.rule_id not in planned]
    if uncited:
        lines.append("")
        lines.append("uncited: " + ", ".join(uncited))
    in_sections = [c.rule.rule_id for c in sorted(coverage.values(),
                                                   key=lambda c: (c.rule.section, c.rule.line))
                   if c.rule.rule_id in planned and c.rule.section in wanted]
    if in_sections:
        lines.append("")
        lines.append("planned (not built yet, not counted): " + ", ".join(in_sections))
    if unknown:
        lines.append("")
        lines.append("cited but not defined in the spec: " + ", ".join(
            f"{rule_id} ({nodeids[0]}{' …' if len(nodeids) > 1 else ''})"
            for rule_id, nodeids in unknown.items()))
    cited, total, percent = coverage_figures(coverage, wanted, planned)
    lines.append("")
    lines.append(f"coverage sections {format_sections(wanted)}: {cited}/{total} ids cited "
                 f"({percent:.1f} %)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 when below ``--fail-under``)."""
    parser = argparse.ArgumentParser(
        description="List every SPEC rule id and the tests that cite it.")
    parser.add_argument("--spec", type=Path, default=None,
                        help="SPEC.md to read (default: ../shared/SPEC.md from the project root)")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT,
                        help="project root holding tests/ (default: %(default)s)")
    parser.add_argument("--sections", default=None,
                        help="comma-separated section numbers, ranges allowed (default: all)")
    parser.add_argument("--missing", action="store_true", help="list only ids no test cites")
    parser.add_argument("--fail-under", type=float, default=None, metavar="PCT",
                        help="exit 1 if coverage of the selected sections (planned ids left "
                             "out) is below PCT, or if the planned list is stale")
    parser.add_argument("--count-planned", action="store_true",
                        help="count the planned ids as gaps too (what is left to build)")
    args = parser.parse_args(argv)

    spec_path = args.spec if args.spec is not None else args.root.resolve().parent / "shared" / "SPEC.md"
    try:
        spec_text = spec_path.read_text(encoding="utf-8")
    except OSError as exc:
        parser.error(f"cannot read spec {spec_path}: {exc}")
    rules = parse_spec(spec_text)
    if not rules:
        parser.error(f"no rule ids found in {spec_path}")
    titles = section_titles(rules, spec_text)
    if args.sections is None:
        sections = sorted({rule.section for rule in rules})
    else:
        try:
            sections = parse_sections(args.sections)
        except ValueError as exc:
            parser.error(f"--sections: {exc}")
        unknown_sections = [n for n in sections if n not in titles]
        if unknown_sections:
            parser.error(f"--sections: not in the spec: {format_sections(unknown_sections)}")

    known = {rule.rule_id for rule in rules}
    letters = "".join(sorted({rule.rule_id[0] for rule in rules}))
    tests = collect_tests(args.root, letters, known)
    coverage = build_coverage(rules, tests)
    planned = {} if args.count_planned else PLANNED
    print(render_report(coverage, sections, titles, missing_only=args.missing,
                        unknown=unknown_citations(known, tests), planned=planned))
    _, _, percent = coverage_figures(coverage, sections, planned)
    failed = False
    if args.fail_under is not None:
        for problem in planned_problems(coverage, planned):
            print(f"FAIL: {problem}", file=sys.stderr)
            failed = True
        if percent < args.fail_under:
            print(f"FAIL: coverage {percent:.1f} % is below {args.fail_under:g} %", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
