"""EVTX chunks whose table links loop: cut before the parser sees them (it would spin for ever)."""

from __future__ import annotations

import io
from pathlib import Path

from edr.sources.replay.evtx_chunks import CHUNK, CHUNK_MAGIC, FILE_HEADER, cut_link_loops, without_link_loops
from tests.cli_helpers import file_event, read_alerts, run_edr, write_ndjson
from tests.conftest import shared_path

RULE_DIR = "rules/windows/file/file_event/file_event_win_susp_legitimate_app_dropping_exe"
SAMPLE = f"regression_data/{RULE_DIR}/f0540f7e-2db3-4432-b9e0-3965486744bc.evtx"
RULE_ID = "f0540f7e-2db3-4432-b9e0-3965486744bc"
#: One byte of that sample which, set to 1, makes a string chain of its chunk loop through two entries
#: (found by scripts/fuzz_replay.py: the parser then never returned, holding the GIL, memory growing).
LOOPING_BYTE = FILE_HEADER + 1674


def chunk(**links: int) -> bytearray:
    """A chunk header with its string bucket 0 / template bucket 0 and entries linked as given (offset=next)."""
    data = bytearray(CHUNK)
    data[:8] = CHUNK_MAGIC
    for where, to in links.items():
        at = {"string0": 0x80, "template0": 0x180}.get(where) or int(where.removeprefix("at"))
        data[at:at + 4] = to.to_bytes(4, "little")
    return data


def link(data: bytearray, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def test_a_loop_through_two_entries_is_cut_where_it_closes() -> None:
    data = chunk(string0=1000, at1000=2000, at2000=1000)
    assert cut_link_loops(data) == ["its string table links loop back to offset 1000"]
    assert (link(data, 0x80), link(data, 1000), link(data, 2000)) == (1000, 2000, 0)
    assert cut_link_loops(data) == []  # the chain now ends


def test_loops_of_either_table_and_to_itself_are_cut_and_good_chains_left_alone() -> None:
    data = chunk(template0=3000, at3000=3000, string0=600, at600=700, at700=0)
    before = bytes(data)
    assert cut_link_loops(data) == ["its template table links loop back to offset 3000"]
    assert link(data, 3000) == 0 and bytes(data[:3000]) == before[:3000]


def test_what_the_parser_refuses_by_itself_is_left_alone() -> None:
    out_of_chunk = chunk(string0=CHUNK - 2)
    assert cut_link_loops(out_of_chunk) == []
    no_magic = chunk(string0=1000, at1000=1000)
    no_magic[:8] = bytes(8)
    assert cut_link_loops(no_magic) == [] and link(no_magic, 1000) == 1000
    assert cut_link_loops(bytearray(b"ElfChnk\0" + bytes(100))) == []


def test_only_a_damaged_file_is_copied() -> None:
    good = io.BytesIO(b"ElfFile\0" + bytes(FILE_HEADER - 8) + bytes(chunk(string0=600)))
    assert without_link_loops(good) == (good, [])
    damaged = bytes(chunk(string0=600)) + bytes(chunk(string0=1000, at1000=2000, at2000=1000))
    fh = io.BytesIO(b"ElfFile\0" + bytes(FILE_HEADER - 8) + damaged)
    repaired, notes = without_link_loops(fh)
    assert repaired is not fh and notes == ["EVTX chunk 1: its string table links loop back to offset 1000; "
                                            "the loop is cut"]
    assert fh.tell() == 0 and repaired.tell() == 0  # both at their start, for the parser
    assert link(bytearray(repaired.read()), FILE_HEADER + CHUNK + 2000) == 0


def test_a_sample_with_a_looping_chain_is_replayed_whole(workdir: Path) -> None:
    sample = shared_path("sigma-regression", SAMPLE)
    rule = shared_path("sigma", RULE_DIR + ".yml")
    data = bytearray(sample.read_bytes())
    assert data[LOOPING_BYTE] == 0
    data[LOOPING_BYTE] = 1
    damaged = workdir / "damaged.evtx"
    damaged.write_bytes(data)
    good = write_ndjson(workdir / "good.ndjson", [file_event("/etc/cron.d/x")])
    (workdir / "sigma.toml").write_text(f'[scanner]\nsigma_rules_path = "{rule}"\n[sigma]\ncache_dir = ""\n'
                                        '[ioc]\nenabled = false\n')
    # a subprocess: the parser that loops holds the GIL, nothing in this process could stop it
    r = run_edr(["replay", "--config", "sigma.toml", "--output", "logs",
                "--no-progress", str(damaged), str(good)], cwd=workdir,
                timeout=60)
    assert r.returncode == 0, r.stderr
    alerts = read_alerts(workdir / "logs")
    assert sorted((a["log.file.path"], a["rule.id"]) for a in alerts) == [(str(damaged), RULE_ID),
                                                                          (str(good), "BUILTIN-CRON")]
    log = "".join(f.read_text() for f in (workdir / "logs").glob("edr.log.*"))
    assert (f"{damaged}: EVTX chunk 0: its string table links loop back to offset 1673; the loop is cut"
            in log)
