"""Tables fit 80 and 100 columns through the real CLI: identifiers are never cut with "…", less important
columns go first, ``--wide`` keeps them all, and piped output carries no trailing padding."""

from __future__ import annotations

import re

import pytest

from tests.cli.conftest import MODEL
from zoo.catalog import list_models, resolve


@pytest.mark.parametrize("width", ["80", "100"])
def test_list_and_show_never_truncate_identifiers(cli, width):
    listing = cli("list", env={"COLUMNS": width})
    assert listing.code == 0, listing.err
    assert "…" not in listing.out and all(len(line) <= int(width) for line in listing.out.splitlines())
    words = set(listing.out.split())
    assert {c.name for c in list_models()} <= words  # every name whole, on one line
    assert "accuracy" in listing.out and "size" in listing.out
    card = resolve(MODEL)
    show = cli("show", MODEL, env={"COLUMNS": width})
    assert show.code == 0 and "…" not in show.out
    assert all(len(line) <= int(width) for line in show.out.splitlines())
    flat = "".join(line.strip("│ ") for line in show.out.splitlines())  # folded identifiers joined back
    assert card.hub_url in flat.replace(" ", "") and card.repo in flat.replace(" ", "")


def test_wide_keeps_every_column_and_pipes_have_no_padding(cli):
    narrow = cli("list", env={"COLUMNS": "80"})
    wide = cli("list", "--wide", env={"COLUMNS": "80"})
    assert " quant " not in narrow.out.splitlines()[2] and " quant " in wide.out.splitlines()[2]
    piped = cli("list", env={"COLUMNS": ""})
    assert piped.code == 0 and not any(line.endswith(" ") for line in piped.out.splitlines())
    assert " quant " in piped.out.splitlines()[2]  # no width limit in a pipe: every column


def test_download_and_cache_list_fit_80_columns(cli, mirror):
    res = cli("download", MODEL, "--no-validate", env={"COLUMNS": "80"})
    assert res.code == 0, res.err
    table = res.out.split("installed")[0]
    assert "…" not in res.out and all(len(line) <= 80 for line in table.splitlines())
    assert "pytorch_model.bin" in table and "download" in table
    listing = cli("cache", "list", env={"COLUMNS": "80"})
    assert listing.code == 0 and "…" not in listing.out
    repo_cells = "".join(re.sub(r"\s+[\d.,]+ [kM]B$", "", line[19:]).strip() for line in listing.out.splitlines()[1:])
    assert resolve(MODEL).repo in repo_cells  # folded onto two lines, but whole
    again = cli("download", MODEL, "--no-validate")
    assert "pinned on first use:" in res.out and "pinned on first use:" not in again.out  # said once, when it happened


def test_search_takes_several_words(cli):
    res = cli("search", "block4", "qat", "--json")
    assert res.code == 0, res.err
    names = [c["name"] for c in res.json()]
    assert names and all("quant" in n for n in names)
