"""``km2pg demo``: generate a realistic export, load it, and show questions answered in SQL."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

from km2pg import db, sources
from km2pg.cli.loading import load_with_progress
from km2pg.cli.report import Request
from km2pg.cli.report_html import make_report
from km2pg.cli.synth import generate_export
from km2pg.dsn import ConnectionSettings
from km2pg.errors import ConfigError

# The demo's report names what the sample data holds: the sign-up funnel, and the homepage
# experiment, whose variation B lifts sign-ups.
DEMO_REPORT: Final = Request(
    funnel=("visited site", "signed up", "checkout successful"),
    experiment="homepage variation",
    conversion="signed up",
)

FOUNDING_QUERY: Final = """
select count(1)
  from events e
  join event_actions using (eventid) -- an event in KM can have more than one action
  join actions a using (actionid)
 where a.name = 'checkout successful'
   and e.t >= now() - interval '1 week'
"""

EVENTS_PER_DAY: Final = """
select date_trunc('day', t)::date as day, count(*) as events
  from events
 where t >= now() - interval '14 days'
 group by 1 order by 1
"""

TOP_ACTIONS: Final = """
select a.name, count(*) as times, count(distinct e.userid) as identities
  from events e join event_actions using (eventid) join actions a using (actionid)
 group by 1 order by 2 desc limit 8
"""

# People (alias clusters), not identities: a visitor who signed up anonymously and checked out
# later under their e-mail address counts once, as the same person.
FUNNEL: Final = """
with firsts as (
  select u.personid, a.name, min(e.t) as first_t
    from events e
    join users u using (userid)
    join event_actions using (eventid)
    join actions a using (actionid)
   where a.name in ('visited site', 'signed up', 'checkout successful')
   group by 1, 2
)
select count(*) filter (where v.first_t is not null) as visited,
       count(*) filter (where s.first_t is not null) as signed_up,
       count(*) filter (where c.first_t > s.first_t) as checked_out_after_signup
  from (select distinct personid from firsts) p
  left join firsts v on v.personid = p.personid and v.name = 'visited site'
  left join firsts s on s.personid = p.personid and s.name = 'signed up'
  left join firsts c on c.personid = p.personid and c.name = 'checkout successful'
"""


def run_demo(
    settings: ConnectionSettings,
    *,
    lines: int = 300_000,
    files: int = 48,
    folder: str | None = None,
) -> int:
    target = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="km2pg-demo-"))
    print(f"Writing a sample export of {lines:,} lines in {files} files to {target} ...")
    export = generate_export(target, lines=lines, files=files, days=28.0)
    print(f"Loading it into {settings.describe()} ...")
    results = load_with_progress(settings, list(sources.discover_local(target / "revisions")))
    with db.connection(settings) as con:
        # Fresh tables have no statistics until autovacuum comes by; the insights' plans need them.
        con.run("ANALYZE")
        con.run("SET search_path = km2pg, public")
        show(con, export.lines)
    print()
    try:
        make_report(settings, DEMO_REPORT, target / "km2pg-report.html")
    except ConfigError as error:  # the [report] extra is not installed
        print(f"(no report: {error})")
    print()
    print('Try it yourself: km2pg psql (search_path is km2pg there), or psql "$(km2pg dsn)";')
    print("km2pg report --help for other ranges, funnels and experiments.")
    return 1 if any(r.failed for r in results) else 0


def show(con: db.Connection, lines: int) -> None:
    del lines
    print()
    print("The founding query: checkouts in the last week")
    print(_indent(FOUNDING_QUERY))
    print(f"  -> {db.scalar(con, FOUNDING_QUERY):,}")
    print()
    print("Events per day, last 14 days")
    _table(db.rows(con, EVENTS_PER_DAY), ["day", "events"])
    print()
    print("Top actions")
    _table(db.rows(con, TOP_ACTIONS), ["action", "times", "identities"])
    print()
    print("Funnel, by person (aliases joined): visited -> signed up -> checkout after signup")
    visited, signed, bought = db.rows(con, FUNNEL)[0]
    print(
        f"  {visited:,} visited -> {signed:,} signed up ({_pct(signed, visited)}) -> "
        f"{bought:,} checked out after signing up ({_pct(bought, signed)})"
    )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _indent(sql: str) -> str:
    return "\n".join("    " + line for line in sql.strip().splitlines())


def _table(rows: list[list[Any]], headers: list[str]) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if n and c[:1].isdigit() else c.ljust(w)
                for c, w in zip(row, widths, strict=True)
            )
        )


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)
