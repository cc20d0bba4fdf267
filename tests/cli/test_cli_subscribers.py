"""``digest subscribers``: list memberships and their state, imports from German Excel,
into a list no newsletter uses, and at the same moment as another; real processes on a
real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from digest.audience.tokens import UNSUBSCRIBE, make_token
from digest.config import load_settings
from digest.store import Store
from tests.cli.test_cli import _serving, digest
from tests.cli.test_cli import site as site  # the fixture

NL = "wochenueberblick"
CONSENT = ("--consent", "Messe 2024, Formular mit Double-Opt-in")

#: A second newsletter, drawing on the list "bayern" only.
LANDKREIS = """
[[newsletters]]
id = "landkreis"
name = "Landkreis aktuell"
sender = "Landkreis aktuell <landkreis@kommune-digital.example>"

[newsletters.impressum]
publisher = "Landkreis (Demo)"
address = "Landratsamt, 80331 München"
contact = "presse@landkreis.example"
responsible = "Max Mustermann"

[[newsletters.categories]]
key = "politik"
title = "Politik"

[[newsletters.segments]]
name = "bayern"
lists = ["bayern"]
"""


async def _import(site: Path, file: str, list_name: str) -> None:
    code, _, err = await digest(
        "subscribers", "import", file, "--list", list_name, *CONSENT, cwd=site
    )
    assert code == 0, err


def _ids(site: Path) -> dict[str, int]:
    store = Store.open(f"sqlite:///{site / 'digest.db'}", migrate=False)
    try:
        return {s.email: s.id for s, _ in store.subscriber_rows() if s.id is not None}
    finally:
        store.close()


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """email -> (status, memberships) of the rows of `subscribers list`."""
    return {
        line.split("\t")[0]: (line.split("\t")[2], line.split("\t")[3])
        for line in out.splitlines()[1:]
    }


async def test_list_shows_the_state_of_each_membership_after_a_one_click_unsubscribe(
    site: Path,
) -> None:
    config = site / "config.toml"
    config.write_text(config.read_text() + LANDKREIS)
    await _import(site, "subscribers/allgemein.csv", "allgemein")
    await _import(site, "subscribers/bayern.csv", "bayern")
    ids = _ids(site)
    secret_key = load_settings(config, environ={}).secret_key
    async with _serving(site) as client:
        # Jürgen is on allgemein and bayern; Anna only on allgemein.
        for email in ("juergen.boehm@example.org", "anna.schulze@example.com"):
            token = make_token(secret_key, UNSUBSCRIBE, ids[email], NL)
            done = await client.post(
                f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
            )
            assert done.status_code == 200

    code, out, err = await digest("subscribers", "list", cwd=site)
    assert code == 0, err
    assert out.splitlines()[0] == "11 subscribers: 10 active, 1 unsubscribed"
    rows = _rows(out)
    # Wochenüberblick left, Landkreis aktuell (on bayern) still read.
    assert rows["juergen.boehm@example.org"] == ("active", "allgemein:unsubscribed,bayern:active")
    assert rows["anna.schulze@example.com"] == ("unsubscribed", "allgemein:unsubscribed")
    assert rows["franziska.huber@example.org"] == ("active", "bayern:active")

    code, out, err = await digest("subscribers", "list", "--status", "unsubscribed", cwd=site)
    assert code == 0, err
    assert sorted(_rows(out)) == ["anna.schulze@example.com", "juergen.boehm@example.org"]

    code, out, err = await digest("subscribers", "list", "--list", "allgemein", cwd=site)
    assert code == 0, err
    assert out.splitlines()[0] == "8 subscribers in list 'allgemein': 6 active, 2 unsubscribed"
    assert _rows(out)["juergen.boehm@example.org"][0] == "unsubscribed"
    code, out, _ = await digest(
        "subscribers", "list", "--list", "allgemein", "--status", "active", cwd=site
    )
    assert len(_rows(out)) == 6 and "anna.schulze@example.com" not in out
    code, out, _ = await digest(
        "subscribers", "list", "--list", "bayern", "--status", "unsubscribed", cwd=site
    )
    assert out.splitlines() == ["4 subscribers in list 'bayern': 4 active"]


async def test_import_into_a_list_no_segment_uses_warns(site: Path) -> None:
    args = ("subscribers", "import", "subscribers/it-leitungen.csv", *CONSENT)
    code, out, err = await digest(*args, "--list", "it-interm", cwd=site)
    assert code == 0
    assert "4 imported" in out and "in list 'it-interm'" in out
    assert err.splitlines() == [
        "warning: no segment of any newsletter draws on the list 'it-interm', so its "
        "readers get no newsletter (lists in use: allgemein, bayern, it-leitungen); "
        "did you mean 'it-leitungen'?"
    ]
    code, out, err = await digest(*args, "--list", "it-leitungen", "--dry-run", cwd=site)
    assert (code, err) == (0, "") and "4 updated" in out


#: What German Excel writes as "CSV UTF-8": a BOM, semicolons, CRLF, quotes where needed.
EXCEL = (
    "\ufeffemail;name;categories;regions;locale\r\n"
    "lena.mueller@example.org;Müller, Lena;politik|verwaltung;Bayern;de_DE\r\n"
    'tom.berg@example.org;"Berg; Tom";;;\r\n'
    "ina.wolf@example.org;Ina Wolf;;;en_GB\r\n"
)


async def test_import_reads_the_semicolons_of_german_excel(site: Path) -> None:
    (site / "excel.csv").write_bytes(EXCEL.encode("utf-8"))
    args = ("subscribers", "import", "excel.csv", "--list", "bayern", *CONSENT)
    code, out, err = await digest(*args, cwd=site)
    assert (code, err) == (0, ""), err
    assert "3 imported, 0 updated, 0 unchanged, 0 suppressed, 0 skipped" in out
    code, out, _ = await digest("subscribers", "list", cwd=site)
    names = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines()[1:]}
    assert names == {
        "ina.wolf@example.org": "Ina Wolf",
        "lena.mueller@example.org": "Müller, Lena",
        "tom.berg@example.org": "Berg; Tom",
    }

    # Named, the delimiter is not guessed: a comma finds no 'email' column, and says so.
    code, out, err = await digest(*args, "--delimiter", ",", cwd=site)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: excel.csv: line 1: the header has no 'email' column (columns: email, name, "
        "categories, regions, locale, separated by ','; --delimiter names another)"
    ]
    code, out, err = await digest(*args, "--delimiter", ";", cwd=site)
    assert code == 0 and "0 imported, 0 updated, 3 unchanged" in out

    (site / "tabs.csv").write_text(EXCEL.replace(";", "\t").replace('"Berg\t Tom"', "Tom"))
    tabs = ("subscribers", "import", "tabs.csv", "--list", "bayern", *CONSENT)
    code, out, err = await digest(*tabs, "--delimiter", "tab", cwd=site)
    assert code == 0 and "0 imported, 1 updated, 2 unchanged" in out, err

    # One column only: nothing to guess from, and nothing needs a delimiter.
    (site / "one.csv").write_text("email\nkarl.klein@example.org\n")
    code, out, err = await digest(
        "subscribers", "import", "one.csv", "--list", "bayern", *CONSENT, cwd=site
    )
    assert (code, err) == (0, "") and "1 imported" in out

    code, out, err = await digest(*args, "--delimiter", "ab", cwd=site)
    assert code == 2 and out == "" and "'ab' is not a delimiter" in err
    assert "Traceback" not in err


async def test_two_imports_adding_the_same_addresses_at_once(site: Path, store_url: str) -> None:
    rows = [f"leser{n}@example.org,Leser {n},,,de_DE" for n in range(3000)]
    (site / "viele.csv").write_text("email,name,categories,regions,locale\n" + "\n".join(rows))
    store = {"DIGEST_STORE_URL": store_url}
    code, _, err = await digest("migrate", cwd=site, **store)  # both only import
    assert code == 0, err
    results = await asyncio.gather(
        *(
            digest(
                "subscribers", "import", "viele.csv", "--list", name, *CONSENT, cwd=site, **store
            )
            for name in ("allgemein", "bayern")
        )
    )
    for code, _out, err in results:
        # Each goes through (the second one again from what the first stored) or says in
        # one sentence why not; never a traceback.
        assert "Traceback" not in err, err
        assert code == 0 or (code == 1 and len(err.splitlines()) == 1), err
    assert any("3000 imported" in out for _code, out, _err in results)
    code, out, _ = await digest("subscribers", "list", cwd=site, **store)
    joined = sum(code == 0 for code, _out, _err in results)
    lists = "allgemein:active,bayern:active" if joined == 2 else None
    assert out.splitlines()[0] == "3000 subscribers: 3000 active"
    if lists:
        assert all(line.endswith(f"\t{lists}") for line in out.splitlines()[1:])
