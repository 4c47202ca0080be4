"""tools/spec_coverage.py: SPEC rule ids and the tests that cite them."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "spec_coverage.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("spec_coverage", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spec_coverage", module)
    spec.loader.exec_module(module)
    return module


sc = _load_tool()

SPEC = """\
# Product

Rule ids are stable.

## 1. Modes
- S-1 Modes: paper, demo, live.
- S-2 Feeds: replay
  and REST (continuation line, - S-9 is not a definition).

## 2. Risk
- R-1 Max positions.
- R-2 SL streak.
- R-3 Daily loss.
- R-10 Mandatory stop-loss (O-6).
  - R-11 nested items are not definitions

| R-12 | tables are not definitions |

## 3. Exits
- E-1 TP1/TP2.
- E-10 Ladder.

## 4. Empty
Nothing here.
"""


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "SPEC.md").write_text(SPEC, encoding="utf-8")
    for name, body in files.items():
        path = tmp_path / "tests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")
    return tmp_path


def test_parse_spec_ids_sections_and_order():
    rules = sc.parse_spec(SPEC)
    assert [(r.rule_id, r.section) for r in rules] == [
        ("S-1", 1), ("S-2", 1), ("R-1", 2), ("R-2", 2), ("R-3", 2), ("R-10", 2), ("E-1", 3), ("E-10", 3),
    ]
    assert rules[2].section_title == "Risk"
    assert sc.section_titles(rules, SPEC) == {1: "Modes", 2: "Risk", 3: "Exits", 4: "Empty"}


def test_ids_in_name_maps_letter_digits_segments():
    assert sc.ids_in_name("test_r6_three_stop_losses") == ["R-6"]
    assert sc.ids_in_name("test_e10_ladder_caps") == ["E-10"]
    assert sc.ids_in_name("test_z2_R8_total_margin") == ["Z-2", "R-8"]
    assert sc.ids_in_name("test_pause_buttons_R7") == ["R-7"]
    # Not ids: unknown letter, digits glued to letters, digits first, no letter.
    assert sc.ids_in_name("test_x5_thing") == []
    assert sc.ids_in_name("test_e2e_restart") == []
    assert sc.ids_in_name("test_1m_candles_and_15m") == []
    assert sc.ids_in_name("test_f_allows_a_clean_entry") == []
    assert sc.ids_in_name("test_r6_thing", letters="SE") == []


def test_ids_in_text_single_ids_and_ranges():
    assert sc.ids_in_text("SPEC R-6 and E-10 (O-6), R-6 again.") == ["R-6", "E-10", "O-6"]
    assert sc.ids_in_text("SPEC R-1..R-3") == ["R-1", "R-2", "R-3"]
    assert sc.ids_in_text("F-1 … F-3, then F-4 to F-5") == ["F-1", "F-2", "F-3", "F-4", "F-5"]
    assert sc.ids_in_text("T-1–T-2") == ["T-1", "T-2"]
    # Inside a range only ids the spec defines, when it is known; endpoints always count.
    assert sc.ids_in_text("E-1..E-10", known={"E-1", "E-2", "E-10"}) == ["E-1", "E-2", "E-10"]
    # Not ids: glued to other words, unknown letters, lower case, a range across letters.
    assert sc.ids_in_text("sha-256 SHA-256 USDⓈ-M X-1 r-6 XR-6") == []
    assert sc.ids_in_text("R-1..E-3") == ["R-1", "E-3"]
    assert sc.ids_in_text(None) == []


def test_scan_direct_class_and_module_level_citations(tmp_path):
    root = _project(tmp_path, {
        "test_a.py": '''
            """Module about R-1..R-3."""

            def test_r10_named():
                pass

            async def test_docstring_cites():
                """Checks E-10 and S-2."""

            def test_nothing_inherits_module():
                pass

            def helper_r1_not_a_test():
                pass

            class TestLadder:
                """Class about E-1."""

                def test_method_inherits_class(self):
                    pass

                def test_e10_method_named(self):
                    pass

            class Helper:
                def test_ignored_outside_test_classes(self):
                    pass
        ''',
        "sub/test_b.py": '''
            def test_s1_in_a_subfolder():
                pass

            def test_cites_an_id_the_spec_lacks():
                """Z-9."""
        ''',
    })
    rules = sc.load_spec(root / "SPEC.md")
    known = {r.rule_id for r in rules}
    tests = {t.nodeid: t for t in sc.collect_tests(root, known=known)}
    assert set(tests) == {
        "tests/test_a.py::test_r10_named",
        "tests/test_a.py::test_docstring_cites",
        "tests/test_a.py::test_nothing_inherits_module",
        "tests/test_a.py::TestLadder::test_method_inherits_class",
        "tests/test_a.py::TestLadder::test_e10_method_named",
        "tests/sub/test_b.py::test_s1_in_a_subfolder",
        "tests/sub/test_b.py::test_cites_an_id_the_spec_lacks",
    }
    assert tests["tests/test_a.py::test_r10_named"].direct == ("R-10",)
    assert tests["tests/test_a.py::test_docstring_cites"].direct == ("E-10", "S-2")
    module_level = tests["tests/test_a.py::test_nothing_inherits_module"]
    assert (module_level.direct, module_level.inherited, module_level.inherited_from) == (
        (), ("R-1", "R-2", "R-3"), "module")
    class_level = tests["tests/test_a.py::TestLadder::test_method_inherits_class"]
    assert (class_level.direct, class_level.inherited, class_level.inherited_from) == ((), ("E-1",), "class")
    assert tests["tests/test_a.py::TestLadder::test_e10_method_named"].inherited == ()

    coverage = sc.build_coverage(rules, tests.values())
    assert coverage["R-10"].direct == ["tests/test_a.py::test_r10_named"]
    assert coverage["R-1"].direct == [] and coverage["R-1"].inherited == [
        "tests/test_a.py::test_nothing_inherits_module"]
    assert not coverage["R-1"].cited and coverage["E-10"].cited
    assert sc.unknown_citations(known, tests.values()) == {
        "Z-9": ["tests/sub/test_b.py::test_cites_an_id_the_spec_lacks"]}
    # Cited directly: S-1, S-2, R-10, E-10 of 8 ids.
    assert sc.coverage_figures(coverage, [1, 2, 3]) == (4, 8, 50.0)
    assert sc.coverage_figures(coverage, [1]) == (2, 2, 100.0)


def test_sections_parsing_and_formatting():
    assert sc.parse_sections("2,3,4,5,7,8") == [2, 3, 4, 5, 7, 8]
    assert sc.parse_sections("2-5, 8,7") == [2, 3, 4, 5, 7, 8]
    assert sc.format_sections([8, 2, 3, 4, 5, 7]) == "2-5,7,8"
    assert sc.format_sections([1, 2, 4]) == "1,2,4"
    with pytest.raises(ValueError):
        sc.parse_sections("5-2")


def test_main_output_and_fail_under_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sc, "PLANNED", {})  # the project's planned ids are not in this spec
    root = _project(tmp_path, {
        "test_a.py": '''
            def test_s1_modes():
                pass

            def test_r1_and_r2():
                """Also R-2."""
        ''',
    })
    args = ["--root", str(root), "--spec", str(root / "SPEC.md")]

    assert sc.main(args + ["--sections", "1,2", "--fail-under", "50"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "coverage sections 1,2: 3/6 ids cited (50.0 %)"
    assert "tests/test_a.py::test_r1_and_r2" in out
    assert "E-10" not in out  # section 3 not selected

    assert sc.main(args + ["--sections", "1,2", "--fail-under", "50.1"]) == 1
    capsys.readouterr()

    assert sc.main(args + ["--missing"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0]
    assert "R-3" in table and "E-1 " in table and "S-1 " not in table and "R-1 " not in table
    assert out.rstrip().splitlines()[-1] == "coverage sections 1-3: 3/8 ids cited (37.5 %)"

    with pytest.raises(SystemExit) as excinfo:
        sc.main(args + ["--sections", "9"])
    assert excinfo.value.code == 2


def test_real_project_lists_every_id_of_sections_2_to_5_7_8(capsys):
    spec = ROOT.parent / "shared" / "SPEC.md"
    if not spec.exists():
        pytest.skip(f"no product spec at {spec}")
    rules = sc.load_spec(spec)
    wanted = [r.rule_id for r in rules if r.section in {2, 3, 4, 5, 7, 8}]
    assert {"S-10", "F-1", "Z-4", "R-10", "E-10", "B-1"} <= set(wanted)

    code = sc.main(["--sections", "2,3,4,5,7,8"])
    assert code == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("\n\n")[0].splitlines()[2:]]
    assert listed == wanted
    counted = [rule_id for rule_id in wanted if rule_id not in sc.PLANNED]
    assert f"/{len(counted)} ids cited" in out.rstrip().splitlines()[-1]


def test_planned_ids_are_listed_apart_and_left_out_of_the_gate(tmp_path, capsys, monkeypatch):
    """An id not built yet is listed as planned and not counted; once a test cites it, or the
    spec drops it, the gate fails until it leaves the planned list."""
    root = _project(tmp_path, {
        "test_a.py": '''
            def test_s1_modes():
                pass

            def test_s2_feeds():
                pass
        ''',
    })
    args = ["--root", str(root), "--spec", str(root / "SPEC.md"), "--sections", "1,2"]
    planned = {"R-1": "issue 1", "R-2": "issue 1", "R-3": "issue 2", "R-10": "issue 2"}
    monkeypatch.setattr(sc, "PLANNED", planned)
    assert sc.main(args + ["--fail-under", "100"]) == 0
    out = capsys.readouterr().out
    assert "planned (not built yet, not counted): R-1, R-2, R-3, R-10" in out
    assert "(planned: issue 2)" in out
    assert out.rstrip().splitlines()[-1] == "coverage sections 1,2: 2/2 ids cited (100.0 %)"

    # Counting them shows what is left to build, and the gate fails.
    assert sc.main(args + ["--fail-under", "100", "--count-planned"]) == 1
    capsys.readouterr()

    # A gap outside the planned list fails.
    planned.pop("R-10")
    assert sc.main(args + ["--fail-under", "100"]) == 1
    capsys.readouterr()

    # A planned id a test cites fails (the list would lie), and so does one the spec lacks.
    planned.update({"R-10": "issue 2", "S-1": "built already"})
    assert sc.main(args + ["--fail-under", "100"]) == 1
    assert "S-1 is planned but cited by tests/test_a.py::test_s1_modes" in capsys.readouterr().err
    planned.pop("S-1")
    planned["Q-7"] = "gone"
    assert sc.main(args + ["--fail-under", "100"]) == 1
    assert "Q-7 is planned but SPEC.md does not define it" in capsys.readouterr().err


def test_real_project_gate_every_section_with_the_planned_list(capsys):
    """What CI runs: every SPEC section, 100 % but for the planned ids, and no stale planned id."""
    spec = ROOT.parent / "shared" / "SPEC.md"
    if not spec.exists():
        pytest.skip(f"no product spec at {spec}")
    assert sc.main(["--missing", "--fail-under", "100"]) == 0, capsys.readouterr()
