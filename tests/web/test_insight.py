"""The figures pages of the editors' area, through the ASGI app in-process, after a real
send to an SMTP server: German, counts only, a chart with its text, and CSV files."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from digest.config import Settings
from digest.core.i18n import translations
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.store import IssueRecord, Store
from digest.store.clicks import READ, SCANNER, ArticleClicks, ClickKey
from digest.store.insight import IssueDeliveries
from digest.web.admin.figures import WEEKS, IssueFigures, issue_csv
from tests.smtp_server import RecordingServer
from tests.web.test_web_admin import (  # noqa: F401  (the fixture)
    NL,
    NOW,
    WEEK,
    client,
    collected,
    log_in,
)

FIGURES = f"/admin/{NL}/{WEEK}/figures"


@pytest.fixture
async def sent(demo_settings: Settings, collected: Store) -> Store:  # noqa: F811
    """The demo week sent to the three readers, one bounce, one complaint, one of them
    gone since, and clicks on two articles."""
    store = collected
    async with RecordingServer() as smtp:
        pool = SmtpPool(smtp.settings())
        try:
            report = await jobs.send(
                demo_settings, store, demo_settings.newsletter(NL), WEEK, pool, now=NOW
            )
        finally:
            await pool.close()
    assert report is not None and report.sent == 3
    record = store.get_issue(NL, WEEK)
    assert record is not None
    rows = store.deliveries(record.id)
    for row, kind in zip(rows, ("hard", "complaint"), strict=False):
        store.record_bounce(
            row.id, kind, status=None, diagnostic=None, now=datetime.now(UTC),
            soft_limit=3, soft_since=NOW,
        )  # fmt: skip
    store.unsubscribe(rows[2].subscriber_id, NL)
    targets = store.click_targets(NL, WEEK)
    assert targets is not None
    first, second = sorted(targets[1], key=lambda a: a.uid)[:2]
    day = date(2025, 2, 3)
    store.add_clicks(
        {
            ClickKey(record.id, first.article_id, day, "mail", READ): 7,
            ClickKey(record.id, first.article_id, day, "web", READ): 2,
            ClickKey(record.id, second.article_id, day, "mail", READ): 3,
            ClickKey(record.id, second.article_id, day, "mail", SCANNER): 11,
        }
    )
    return store


def cells(page: httpx.Response, caption: str) -> list[list[str]]:
    """The rows of the table with ``caption``, as the text of their cells."""
    table = page.text.split(f">{caption}</caption>", 1)[1].split("</table>", 1)[0]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)
    ]


async def test_an_issue_s_figures(demo_settings: Settings, sent: Store) -> None:
    async with client(demo_settings, sent) as http:
        await log_in(http)
        overview = await http.get("/admin/")
        assert f'href="/admin/{NL}/figures"' in overview.text
        page = await http.get(FIGURES)
    assert page.status_code == 200
    assert "<h1>Zahlen zur Ausgabe 2025-W05</h1>" in page.text
    assert cells(page, "Nachrichten dieser Ausgabe") == [
        ["Verschickt", "3"],
        ["Zurückgestellt", "0"],
        ["Fehlgeschlagen", "0"],
        ["Übersprungen", "0"],
        ["Unzustellbar", "1"],
        ["Beschwerden", "1"],
        ["Danach abgemeldet", "1"],
    ]
    assert "12 Klicks von Leserinnen und Lesern: 10 in der E-Mail, 2 auf der Archivseite." in (
        page.text
    )
    assert "11 Abrufe kamen von Link-Scannern" in page.text
    articles = cells(page, "Klicks je Artikel, die meistgelesenen zuerst")
    assert [row[2:] for row in articles[1:3]] == [["7", "2", "0"], ["3", "0", "11"]]
    assert all(row[2:] == ["0", "0", "0"] for row in articles[3:])
    # Two charts, each an image with a name and its text alternative.
    charts = re.findall(
        r'<svg class="chart" role="img"[^>]*aria-labelledby="([^"]+)" aria-describedby="([^"]+)"',
        page.text,
    )
    assert len(charts) == 2
    for title, desc in charts:
        assert f'<title id="{title}">' in page.text and f'<desc id="{desc}">' in page.text
    assert "Die meistgelesenen Artikel und ihre Klicks: " in page.text
    assert "@example.org" not in page.text and "Leser 0" not in page.text  # nobody named
    assert "<script" not in page.text


async def test_an_issue_s_figures_as_csv(demo_settings: Settings, sent: Store) -> None:
    async with client(demo_settings, sent) as http:
        await log_in(http)
        answer = await http.get(f"{FIGURES}.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == f'attachment; filename="{NL}-{WEEK}.csv"'
    text = answer.content.decode("utf-8")
    assert text.startswith("\ufeffKennzahl;Rubrik;Artikel;Adresse;Anzahl\r\n")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    assert ["Verschickt", "", "", "", "3"] in rows and ["Beschwerden", "", "", "", "1"] in rows
    mail = [r for r in rows if r[0] == "Klicks in der E-Mail"]
    assert sorted(int(r[4]) for r in mail)[-2:] == [3, 7]
    assert sum(int(r[4]) for r in rows if r[0] == "Link-Scanner") == 11


def test_a_title_is_never_a_formula_in_the_csv() -> None:
    record = IssueRecord(1, NL, WEEK, NOW, NOW, "Betreff", "sent", NOW)
    article = ArticleClicks(
        1, '=HYPERLINK("https://evil.example")', "politik", "https://x", 1, 0, 0
    )
    figures = IssueFigures(record, IssueDeliveries(), [article], [])
    text = issue_csv(figures, translations("en_GB").gettext, "en_GB")
    assert text.startswith("\ufeffFigure,Category,Article,Link,Count\r\n")  # ',' in English
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


async def test_a_newsletter_s_readers_per_week_and_its_issues(
    demo_settings: Settings, sent: Store
) -> None:
    async with client(demo_settings, sent) as http:
        await log_in(http)
        page = await http.get(f"/admin/{NL}/figures")
        answer = await http.get(f"/admin/{NL}/figures.csv")
    assert page.status_code == 200
    assert "Zahlen zu Kommune Digital – Wochenüberblick" in page.text
    [issue] = cells(page, "Die neuesten Ausgaben mit verschickten Nachrichten und Klicks")[1:]
    assert issue[0] == WEEK and issue[2:] == ["3", "12"]
    assert f'href="/admin/{NL}/{WEEK}/figures"' in page.text
    weeks = cells(page, "Leserschaft je Woche, die neueste zuerst")
    assert weeks[0] == ["Kalenderwoche", "Hinzugekommen", "Bestätigt", "Abgemeldet", "Unzustellbar"]
    assert len(weeks) == 1 + WEEKS
    year, week, _ = datetime.now(UTC).astimezone(demo_settings.newsletter(NL).zone).isocalendar()
    # This week: three readers joined, one left, one address bounced for good.
    assert weeks[1] == [f"KW {week}/{year}", "3", "0", "1", "1"]
    assert all(row[1:] == ["0", "0", "0", "0"] for row in weeks[2:])
    assert 'role="img"' in page.text and "<desc id=" in page.text

    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.content.decode().lstrip("\ufeff")), delimiter=";"))
    assert rows[0] == [
        "Kalenderwoche",
        "Beginnt",
        "Hinzugekommen",
        "Bestätigt",
        "Abgemeldet",
        "Unzustellbar",
    ]
    assert len(rows) == 1 + WEEKS and rows[-1][2:] == ["3", "0", "1", "1"]
    monday = date.fromisoformat(rows[-1][1])
    assert monday.weekday() == 0 and date.today() - monday < timedelta(days=8)


async def test_figures_need_a_session_and_a_real_issue(
    demo_settings: Settings, sent: Store
) -> None:
    paths = (FIGURES, f"{FIGURES}.csv", f"/admin/{NL}/figures", f"/admin/{NL}/figures.csv")
    async with client(demo_settings, sent) as http:
        for path in paths:
            answer = await http.get(path)
            assert answer.status_code == 303 and "/admin/login" in answer.headers["location"]
        await log_in(http)
        for path in (
            f"/admin/{NL}/2025-W06/figures",  # never composed
            f"/admin/{NL}/2025-W99/figures.csv",
            "/admin/gibt-es-nicht/figures",
            f"/admin/gibt-es-nicht/{WEEK}/figures",
        ):
            assert (await http.get(path)).status_code == 404, path
        # The issue's own page is still where it was.
        assert (await http.get(f"/admin/{NL}/{WEEK}")).status_code == 200
