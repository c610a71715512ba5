-- km2pg schema, version 2: insights. Kissmetrics' reports as views and functions, all counting
-- people (users.personid: aliases resolved), not identities. Times are UTC. See README, Insights.
--
-- Event times come from eventids ((seconds since 2000-01-01) << 32 | userid), so the functions
-- below read event_actions and event_properties alone, their partitions pruned by eventid range,
-- and find the person through users (userid = eventid & 4294967295).

-- ---------------------------------------------------------------------------------------------
-- Helpers

CREATE FUNCTION km2pg.normalize_name(name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    -- Python's str.strip() whitespace, then lower(): what the loader does to action and key names.
    AS $$ SELECT lower(btrim(name, U&' \0009\000A\000B\000C\000D\001C\001D\001E\001F\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000')) $$;

COMMENT ON FUNCTION km2pg.normalize_name(text) IS
    'An action or key name as the loader stores it: trimmed and lowercased.';

CREATE FUNCTION km2pg.eventid_from(t timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN t = '-infinity' THEN 0
        WHEN t = 'infinity' THEN 9223372036854775807
        ELSE greatest(least(ceil(extract(epoch FROM t))::bigint - 946684800, 2147483647), 0) << 32
    END $$;

COMMENT ON FUNCTION km2pg.eventid_from(timestamptz) IS
    'The smallest eventid of an event at or after t (exact for fractional and infinite t): '
    'event time >= t exactly when eventid >= eventid_from(t).';

CREATE FUNCTION km2pg.check_range(since timestamptz, until timestamptz) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'since and until must not be null: give a range [since, until), '
                        'with ''-infinity'' or ''infinity'' for an open end'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since (%) must be before until (%): the range is [since, until)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE FUNCTION km2pg.check_unit(unit text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF unit IS NULL OR unit NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'unit must be ''day'', ''week'' or ''month'', not %', coalesce(quote_literal(unit), 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- 5. num: the number a property value holds

-- A regular expression first, so no value can make the cast fail: plain decimal numbers with an
-- optional sign, fraction and exponent (at most 1,000 characters and a 4-digit exponent, both far
-- inside numeric's range). Not numbers: '', 'NaN', 'Infinity', '1,000', '$5', '5 USD', 'true'.
CREATE FUNCTION km2pg.num(value text) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN length(value) <= 1000
         AND value ~ '^ *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})? *$'
        THEN CAST(value AS numeric)
    END $$;

COMMENT ON FUNCTION km2pg.num(text) IS
    'The number a property value holds (''12.50'', ''-3'', ''1e3''), or null when it is not a '
    'plain decimal number; never an error.';

-- ---------------------------------------------------------------------------------------------
-- Events by identity: one person's timeline, property_at and people need the events of a few
-- identities without scanning every event.

CREATE INDEX events_userid ON km2pg.events (userid);

-- ---------------------------------------------------------------------------------------------
-- 3. person_properties: kept by the loader, in the load's transaction

-- One row per person and key: the latest setting (greatest (t, revision, lineno, value)) and the
-- earliest (least of the same) of the rows event_properties holds for the person's identities.
-- first_eventid is the event of the earliest setting: when a later line replaces that event's
-- value, the loader looks again at that second (see store.py). value ties compare in "C" order.
CREATE TABLE km2pg.person_property_state (
    personid       bigint NOT NULL,
    keyid          integer NOT NULL,
    value          text NOT NULL,
    t              timestamptz NOT NULL,
    revision       bigint NOT NULL,
    lineno         integer NOT NULL,
    first_value    text NOT NULL,
    first_t        timestamptz NOT NULL,
    first_revision bigint NOT NULL,
    first_lineno   integer NOT NULL,
    first_eventid  bigint NOT NULL,
    PRIMARY KEY (personid, keyid)
);
CREATE INDEX person_property_state_keyid ON km2pg.person_property_state (keyid);

COMMENT ON TABLE km2pg.person_property_state IS
    'What person_properties shows, with the line each value came from. Written only by the '
    'loader, under the alias lock; read person_properties instead.';

-- The full recomputation from event_properties: what person_property_state must equal after
-- any set of loads. Used to fill the table when this migration runs, and by the tests.
CREATE FUNCTION km2pg.person_properties_recomputed()
    RETURNS TABLE (personid bigint, keyid integer, value text, t timestamptz, revision bigint,
                   lineno integer, first_value text, first_t timestamptz, first_revision bigint,
                   first_lineno integer, first_eventid bigint)
    LANGUAGE sql STABLE AS $$
    WITH settings AS MATERIALIZED (
        SELECT u.personid, p.keyid, p.value, p.eventid >> 32 AS s, p.revision, p.lineno, p.eventid
          FROM km2pg.event_properties p
          JOIN km2pg.users u ON u.userid = p.eventid & 4294967295
    ),
    latest AS (
        SELECT DISTINCT ON (personid, keyid) *
          FROM settings
         ORDER BY personid, keyid, s DESC, revision DESC, lineno DESC, value COLLATE "C" DESC
    ),
    earliest AS (
        SELECT DISTINCT ON (personid, keyid) *
          FROM settings
         ORDER BY personid, keyid, s, revision, lineno, value COLLATE "C"
    )
    SELECT l.personid, l.keyid, l.value, km2pg.eventid_time(l.eventid), l.revision, l.lineno,
           f.value, km2pg.eventid_time(f.eventid), f.revision, f.lineno, f.eventid
      FROM latest l JOIN earliest f USING (personid, keyid)
$$;

INSERT INTO km2pg.person_property_state
SELECT * FROM km2pg.person_properties_recomputed() ORDER BY personid, keyid;

CREATE VIEW km2pg.person_properties AS
SELECT s.personid, k.name AS key, s.value, s.t, s.first_value, s.first_t
  FROM km2pg.person_property_state s
  JOIN km2pg.keys k USING (keyid);

COMMENT ON VIEW km2pg.person_properties IS
    'One row per person and key: the latest value set (value, t) and the first (first_value, '
    'first_t), over all the person''s identities ("last value ever", "first value ever"). Kept '
    'by the loader; pruning events leaves it as it is.';

-- ---------------------------------------------------------------------------------------------
-- 1. people, 2. timeline

CREATE VIEW km2pg.people AS
SELECT p.personid, p.identities, e.first_seen, e.last_seen, coalesce(e.events, 0) AS events
  FROM (SELECT personid, array_agg(name ORDER BY name COLLATE "C") AS identities
          FROM km2pg.users GROUP BY personid) AS p
  LEFT JOIN (SELECT u.personid, min(ev.t) AS first_seen, max(ev.t) AS last_seen,
                    count(*) AS events
               FROM km2pg.events ev JOIN km2pg.users u USING (userid)
              GROUP BY u.personid) AS e USING (personid);

COMMENT ON VIEW km2pg.people IS
    'One row per person: its identities (sorted), first and last event time, and event count.';

CREATE VIEW km2pg.timeline AS
SELECT e.eventid, e.t, u.personid, e.userid, u.name AS identity,
       coalesce((SELECT array_agg(a.name ORDER BY a.name COLLATE "C")
                   FROM km2pg.event_actions x JOIN km2pg.actions a USING (actionid)
                  WHERE x.eventid = e.eventid), '{}') AS actions,
       coalesce((SELECT jsonb_object_agg(k.name, p.value)
                   FROM km2pg.event_properties p JOIN km2pg.keys k USING (keyid)
                  WHERE p.eventid = e.eventid), '{}') AS properties
  FROM km2pg.events e
  JOIN km2pg.users u USING (userid);

COMMENT ON VIEW km2pg.timeline IS
    'Every event with its person, identity, actions (sorted; empty for property sets) and '
    'properties (key -> value). Filter by personid to browse one person''s history.';

-- ---------------------------------------------------------------------------------------------
-- 4. property_at

CREATE FUNCTION km2pg.property_at(personid bigint, key text, at timestamptz) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT p.value
      FROM km2pg.users u
      JOIN km2pg.events e ON e.userid = u.userid AND e.t <= property_at.at
      JOIN km2pg.event_properties p ON p.eventid = e.eventid
     WHERE u.personid = property_at.personid
       AND p.keyid = (SELECT k.keyid FROM km2pg.keys k
                       WHERE k.name = km2pg.normalize_name(property_at.key))
     ORDER BY e.t DESC, p.revision DESC, p.lineno DESC, p.value COLLATE "C" DESC
     LIMIT 1
$$;

COMMENT ON FUNCTION km2pg.property_at(bigint, text, timestamptz) IS
    'The latest value of key set at or before at, over all the person''s identities; null if none.';

-- ---------------------------------------------------------------------------------------------
-- 6. funnel

-- One CTE per step, s1 .. sN, each a hash join of the previous step's people with the events of
-- the step's action: the statement is built from the step numbers only (integers); every value,
-- the action names included, is a parameter.
CREATE FUNCTION km2pg.funnel(steps text[], since timestamptz, until timestamptz,
                             within interval DEFAULT '30 days')
    RETURNS TABLE (step int, action text, people bigint, of_first numeric, of_previous numeric)
    LANGUAGE plpgsql STABLE
    -- Every join here is by person over large sets whose sizes the planner can only guess (each
    -- step's people): hash joins always, never a nested loop over a guess of a few rows; and
    -- memory enough for hash tables of a million people (the default 4MB spills them to disk).
    SET enable_nestloop = off
    SET work_mem = '128MB'
    AS $$
DECLARE
    n int := coalesce(array_length(steps, 1), 0);
    names text[];
    ids integer[];
    query text;
    k int;
BEGIN
    PERFORM km2pg.check_range(since, until);
    IF n = 0 OR array_position(steps, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'steps must name one action or more, none of them null (got %)',
                        coalesce(steps::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF within IS NULL OR within < interval '0' THEN
        RAISE EXCEPTION 'within must be an interval of zero or more (got %)', coalesce(within::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    names := ARRAY(SELECT km2pg.normalize_name(s) FROM unnest(steps) WITH ORDINALITY AS x (s, o)
                    ORDER BY o);
    ids := ARRAY(SELECT (SELECT a.actionid FROM km2pg.actions a WHERE a.name = x.s)
                   FROM unnest(names) WITH ORDINALITY AS x (s, o) ORDER BY o);
    -- $1 since, $2 until, $3 within, $4 the steps' actionids (null: an unknown action); event
    -- times as seconds since 2000 (eventid >> 32); lim: the last second step 1 + within allows.
    query := $q$
        WITH ev AS MATERIALIZED (
            SELECT u.personid, x.eventid >> 32 AS s, x.actionid
              FROM km2pg.event_actions x
              JOIN km2pg.users u ON u.userid = x.eventid & 4294967295
             WHERE x.actionid = ANY ($4)
               AND x.eventid >= km2pg.eventid_from($1)
               AND x.eventid < km2pg.eventid_from((($2 AT TIME ZONE 'UTC') + $3) AT TIME ZONE 'UTC')
        ),
        s1 AS (
            SELECT f.personid, f.s, f.s AS s1,
                   floor(extract(epoch FROM ((km2pg.eventid_time(f.s << 32) AT TIME ZONE 'UTC') + $3)
                                            AT TIME ZONE 'UTC'))::bigint - 946684800 AS lim
              FROM (SELECT personid, min(s) AS s
                      FROM ev
                     WHERE actionid = $4[1]
                       AND s >= (km2pg.eventid_from($1) >> 32) AND s < (km2pg.eventid_from($2) >> 32)
                     GROUP BY personid) AS f
        )$q$;
    FOR k IN 2 .. n LOOP
        query := query || format($q$,
        s%s AS (
            SELECT p.personid, min(ev.s) AS s, p.s1, p.lim
              FROM s%s p
              JOIN ev ON ev.personid = p.personid AND ev.actionid = $4[%s]
                     AND ev.s >= p.s AND ev.s <= p.lim
             GROUP BY p.personid, p.s1, p.lim
        )$q$, k, k - 1, k);
    END LOOP;
    query := query || ', reached (step, people) AS (';
    FOR k IN 1 .. n LOOP
        query := query || CASE WHEN k > 1 THEN ' UNION ALL ' ELSE '' END
                       || format('SELECT %s, count(*) FROM s%s', k, k);
    END LOOP;
    query := query || $q$)
        SELECT r.step, CAST($5[r.step] AS text), r.people,
               CASE WHEN f.people > 0 THEN round(r.people::numeric / f.people, 4) ELSE 0 END,
               CASE WHEN r.step = 1 THEN (CASE WHEN r.people > 0 THEN 1 ELSE 0 END)
                    WHEN p.people > 0 THEN round(r.people::numeric / p.people, 4) ELSE 0 END
          FROM reached r
          JOIN reached f ON f.step = 1
          LEFT JOIN reached p ON p.step = r.step - 1
         ORDER BY r.step$q$;
    RETURN QUERY EXECUTE query USING since, until, within, ids, names;
END $$;

COMMENT ON FUNCTION km2pg.funnel(text[], timestamptz, timestamptz, interval) IS
    'People completing each step of a funnel: step 1 in [since, until), each next step at or '
    'after the previous one and within `within` of step 1.';

-- ---------------------------------------------------------------------------------------------
-- 7. retention

CREATE FUNCTION km2pg.retention(first_action text, return_action text, since timestamptz,
                                until timestamptz, unit text DEFAULT 'week', periods int DEFAULT 8)
    RETURNS TABLE (cohort date, people bigint, period int, returned bigint, share numeric)
    LANGUAGE plpgsql STABLE
    SET enable_nestloop = off  -- as funnel: joins by person over sets of guessed sizes
    SET work_mem = '128MB'
    AS $$
DECLARE
    first_id integer;
    return_id integer;
    step interval;
BEGIN
    PERFORM km2pg.check_range(since, until);
    PERFORM km2pg.check_unit(unit);
    IF periods IS NULL OR periods < 1 OR periods > 1000 THEN
        RAISE EXCEPTION 'periods must be from 1 to 1000 (got %)', coalesce(periods::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF first_action IS NULL OR return_action IS NULL THEN
        RAISE EXCEPTION 'first_action and return_action must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    step := CAST('1 ' || unit AS interval);
    first_id := (SELECT a.actionid FROM km2pg.actions a
                  WHERE a.name = km2pg.normalize_name(first_action));
    return_id := (SELECT a.actionid FROM km2pg.actions a
                   WHERE a.name = km2pg.normalize_name(return_action));
    RETURN QUERY
    WITH starts AS (
        SELECT u.personid, km2pg.eventid_time(min(x.eventid)) AS start
          FROM km2pg.event_actions x
          JOIN km2pg.users u ON u.userid = x.eventid & 4294967295
         WHERE x.actionid = first_id
         GROUP BY u.personid
    ),
    cohorts AS (
        SELECT s.personid, s.start,
               CAST(date_trunc(unit, s.start AT TIME ZONE 'UTC') AS date) AS cohort
          FROM starts s
         WHERE s.start >= since AND s.start < until
    ),
    sizes AS (
        SELECT c.cohort, count(*) AS people FROM cohorts c GROUP BY c.cohort
    ),
    returns AS (
        SELECT c.cohort, c.personid,
               CAST(date_trunc(unit, km2pg.eventid_time(x.eventid) AT TIME ZONE 'UTC') AS date) AS unit_start
          FROM km2pg.event_actions x
          JOIN km2pg.users u ON u.userid = x.eventid & 4294967295
          JOIN cohorts c ON c.personid = u.personid
         WHERE x.actionid = return_id
           AND x.eventid >= km2pg.eventid_from(
                   (SELECT min(c2.cohort) FROM cohorts c2)::timestamp AT TIME ZONE 'UTC')
           AND x.eventid < km2pg.eventid_from(
                   ((SELECT max(c2.cohort) FROM cohorts c2) + periods * step) AT TIME ZONE 'UTC')
           AND km2pg.eventid_time(x.eventid) >= c.start
    ),
    counted AS (
        SELECT r.cohort,
               CAST(CASE unit
                   WHEN 'day' THEN r.unit_start - r.cohort
                   WHEN 'week' THEN (r.unit_start - r.cohort) / 7
                   ELSE (extract(year FROM r.unit_start) - extract(year FROM r.cohort)) * 12
                        + extract(month FROM r.unit_start) - extract(month FROM r.cohort)
               END AS int) AS n,
               count(DISTINCT r.personid) AS returned
          FROM returns r
         GROUP BY 1, 2
    )
    SELECT z.cohort, z.people, g.n, coalesce(c.returned, 0),
           round(coalesce(c.returned, 0)::numeric / z.people, 4)
      FROM sizes z
     CROSS JOIN generate_series(0, periods - 1) AS g (n)
      LEFT JOIN counted c ON c.cohort = z.cohort AND c.n = g.n
     ORDER BY z.cohort, g.n;
END $$;

COMMENT ON FUNCTION km2pg.retention(text, text, timestamptz, timestamptz, text, int) IS
    'Cohorts by the unit of each person''s first first_action, and how many came back with '
    'return_action in each of the next periods units.';

-- ---------------------------------------------------------------------------------------------
-- 8. ab_test

-- The standard normal upper tail, erfc(x), to a relative error below 1e-12 (the tests compare with Python's math.erfc): the power series
-- of erf below 2 (no cancellation worth the name there), the continued fraction of erfc
-- above (modified Lentz). PostgreSQL has erfc() only from version 16.
CREATE FUNCTION km2pg.erfc(x double precision) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    a double precision := abs(x);
    term double precision;
    total double precision;
    f double precision;
    c double precision;
    d double precision;
    delta double precision;
    n int;
    tiny constant double precision := 1e-300;
BEGIN
    IF a < 2 THEN
        -- erf(a) = 2/sqrt(pi) * sum (-1)^n a^(2n+1) / (n! (2n+1))
        term := a;
        total := a;
        n := 0;
        LOOP
            n := n + 1;
            term := -term * a * a / n;
            total := total + term / (2 * n + 1);
            EXIT WHEN abs(term / (2 * n + 1)) < 1e-17 * abs(total) OR n > 200;
        END LOOP;
        total := 1 - 2 / sqrt(pi()) * total;
    ELSIF a > 26.5 THEN
        total := 0;  -- below 1e-306: exp(-a*a) would underflow
    ELSE
        -- erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))
        f := a;
        c := a;
        d := 0;
        n := 0;
        LOOP
            n := n + 1;
            d := a + (n / 2.0) * d;
            IF abs(d) < tiny THEN d := tiny; END IF;
            c := a + (n / 2.0) / c;
            IF abs(c) < tiny THEN c := tiny; END IF;
            d := 1 / d;
            delta := c * d;
            f := f * delta;
            EXIT WHEN abs(delta - 1) < 1e-16 OR n > 5000;
        END LOOP;
        total := exp(-a * a) / sqrt(pi()) / f;
    END IF;
    IF x < 0 THEN
        RETURN 2 - total;
    END IF;
    RETURN total;
END $$;

COMMENT ON FUNCTION km2pg.erfc(double precision) IS
    'The complementary error function (relative error below 1e-12); the two-sided p-value of '
    'a z-score is erfc(|z| / sqrt(2)).';

CREATE FUNCTION km2pg.ab_test(experiment_key text, conversion_action text, since timestamptz,
                              until timestamptz)
    RETURNS TABLE (variant text, people bigint, converted bigint, rate numeric, z numeric,
                   p_value numeric)
    LANGUAGE plpgsql STABLE
    SET enable_nestloop = off  -- as funnel: joins by person over sets of guessed sizes
    SET work_mem = '128MB'
    AS $$
DECLARE
    key_id integer;
    action_id integer;
BEGIN
    PERFORM km2pg.check_range(since, until);
    IF experiment_key IS NULL OR conversion_action IS NULL THEN
        RAISE EXCEPTION 'experiment_key and conversion_action must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key_id := (SELECT k.keyid FROM km2pg.keys k WHERE k.name = km2pg.normalize_name(experiment_key));
    action_id := (SELECT a.actionid FROM km2pg.actions a
                   WHERE a.name = km2pg.normalize_name(conversion_action));
    RETURN QUERY
    WITH exposed AS (
        SELECT DISTINCT ON (u.personid) u.personid, p.value AS v, p.eventid >> 32 AS s
          FROM km2pg.event_properties p
          JOIN km2pg.users u ON u.userid = p.eventid & 4294967295
         WHERE p.keyid = key_id
           AND p.eventid >= km2pg.eventid_from(since) AND p.eventid < km2pg.eventid_from(until)
         ORDER BY u.personid, p.eventid >> 32, p.revision, p.lineno, p.value COLLATE "C"
    ),
    conversions AS (
        SELECT u.personid, max(x.eventid >> 32) AS last_s
          FROM km2pg.event_actions x
          JOIN km2pg.users u ON u.userid = x.eventid & 4294967295
         WHERE x.actionid = action_id
           AND x.eventid >= km2pg.eventid_from(since) AND x.eventid < km2pg.eventid_from(until)
         GROUP BY u.personid
    ),
    arms AS (
        SELECT e.v, count(*) AS n, count(*) FILTER (WHERE c.last_s >= e.s) AS conv
          FROM exposed e LEFT JOIN conversions c USING (personid)
         GROUP BY e.v
    ),
    control AS (
        SELECT a.v, a.n, a.conv FROM arms a ORDER BY a.n DESC, a.v COLLATE "C" LIMIT 1
    ),
    tested AS (
        SELECT a.v, a.n, a.conv, a.v = c.v AS is_control,
               (a.conv + c.conv)::float8 / (a.n + c.n) AS pooled,
               a.conv::float8 / a.n - c.conv::float8 / c.n AS diff,
               1.0 / a.n + 1.0 / c.n AS inv
          FROM arms a CROSS JOIN control c
    ),
    scored AS (
        SELECT t.*, CASE WHEN t.is_control THEN NULL
                         WHEN t.pooled * (1 - t.pooled) * t.inv <= 0 THEN 0
                         ELSE t.diff / sqrt(t.pooled * (1 - t.pooled) * t.inv) END AS zs
          FROM tested t
    )
    SELECT s.v, s.n, s.conv, round(s.conv::numeric / s.n, 4), round(s.zs::numeric, 4),
           CAST(km2pg.erfc(abs(s.zs) / sqrt(2.0)) AS numeric)
      FROM scored s
     ORDER BY s.is_control DESC, s.v COLLATE "C";
END $$;

COMMENT ON FUNCTION km2pg.ab_test(text, text, timestamptz, timestamptz) IS
    'People per variant (their first value of experiment_key in [since, until)), how many '
    'converted after exposure, and the two-proportion z-test of each variant against the control.';

-- ---------------------------------------------------------------------------------------------
-- 9. revenue

CREATE FUNCTION km2pg.revenue(key text DEFAULT 'billing amount',
                              since timestamptz DEFAULT '-infinity',
                              until timestamptz DEFAULT 'infinity', unit text DEFAULT 'month')
    RETURNS TABLE (period_start date, revenue numeric, payers bigint, per_payer numeric)
    LANGUAGE plpgsql STABLE
    SET work_mem = '128MB'  -- as funnel: hash tables of a million people
    AS $$
DECLARE
    key_id integer;
BEGIN
    PERFORM km2pg.check_range(since, until);
    PERFORM km2pg.check_unit(unit);
    IF key IS NULL THEN
        RAISE EXCEPTION 'key must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key_id := (SELECT k.keyid FROM km2pg.keys k WHERE k.name = km2pg.normalize_name(key));
    RETURN QUERY
    SELECT x.d, sum(x.amount), count(DISTINCT x.personid),
           round(sum(x.amount) / count(DISTINCT x.personid), 4)
      FROM (SELECT CAST(date_trunc(unit, km2pg.eventid_time(p.eventid) AT TIME ZONE 'UTC') AS date) AS d,
                   km2pg.num(p.value) AS amount, u.personid
              FROM km2pg.event_properties p
              JOIN km2pg.users u ON u.userid = p.eventid & 4294967295
             WHERE p.keyid = key_id
               AND p.eventid >= km2pg.eventid_from(since)
               AND p.eventid < km2pg.eventid_from(until)) AS x
     WHERE x.amount IS NOT NULL
     GROUP BY x.d
     ORDER BY x.d;
END $$;

COMMENT ON FUNCTION km2pg.revenue(text, timestamptz, timestamptz, text) IS
    'Per period: the sum of the numeric values of key (refunds negative), the people with one '
    'or more, and revenue per payer. Periods without a numeric value are left out.';
