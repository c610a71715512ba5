-- km2pg schema, version 5: the insight functions made faster (issue 9's speed table). Same
-- contract and results as migration 2; see README, Insights ("Speed") for the figures.
--
-- What changes, and why:
-- - People are found through merged_identities (the identities whose person is another userid,
--   about a fifth of them): personid = coalesce(merged personid, userid). Hashing those beats
--   hashing every identity of users, and the join runs inside parallel workers.
-- - Periods are found by width_bucket over an array of the units' first seconds (eventid >> 32)
--   computed once per call, instead of date_trunc on every row's timestamp.
-- - retention no longer groups every first_action event of all history by person: the people
--   with one in [since, until) are the candidates, and the events before since only rule
--   candidates out (a probe per row, nothing grouped but the few it finds).
-- - revenue sums per person, then per period (numeric sums are exact: the same totals), instead
--   of sorting every row for count(DISTINCT).
-- - Each query runs with EXECUTE ... USING: planned for the call's own values every time
--   (PL/pgSQL would switch a static query to a generic plan after five calls in a session), so
--   partitions are pruned at plan time and parallel plans are allowed (RETURN QUERY runs them).
-- None of this reads the partitioned parents' statistics, which autovacuum never gathers: the
-- plans were measured the same with the parents' statistics deleted, and with none at all.

-- ---------------------------------------------------------------------------------------------
-- Helpers

CREATE VIEW km2pg.merged_identities AS
SELECT u.userid, u.personid FROM km2pg.users u WHERE u.personid <> u.userid;

COMMENT ON VIEW km2pg.merged_identities IS
    'The identities that aliases joined to a person with a smaller userid: every other '
    'identity''s personid is its own userid. Events reach their person through it cheaply.';

-- The first second (as eventid >> 32) of each unit from the one holding first_s to the one
-- holding last_s, plus `extra` units after it; and the units' starts as dates. width_bucket(s,
-- bounds) is then the unit (1-based index into starts) holding second s.
CREATE FUNCTION km2pg.unit_starts(unit text, first_s bigint, last_s bigint, extra int)
    RETURNS TABLE (starts date[], bounds bigint[])
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(CAST(g AS date) ORDER BY g),
           array_agg(CAST(extract(epoch FROM g) AS bigint) - 946684800 ORDER BY g)
      FROM generate_series(
               date_trunc(unit, km2pg.eventid_time(first_s << 32) AT TIME ZONE 'UTC'),
               date_trunc(unit, km2pg.eventid_time(last_s << 32) AT TIME ZONE 'UTC')
                   + extra * CAST('1 ' || unit AS interval),
               CAST('1 ' || unit AS interval)) AS g
$$;

COMMENT ON FUNCTION km2pg.unit_starts(text, bigint, bigint, int) IS
    'The starts of the units (day, week, month; UTC) from the one holding second first_s to the '
    'one holding last_s plus extra: as dates and as seconds since 2000 (eventid >> 32).';

-- ---------------------------------------------------------------------------------------------
-- 7. retention

CREATE OR REPLACE FUNCTION km2pg.retention(first_action text, return_action text, since timestamptz,
                                until timestamptz, unit text DEFAULT 'week', periods int DEFAULT 8)
    RETURNS TABLE (cohort date, people bigint, period int, returned bigint, share numeric)
    LANGUAGE plpgsql STABLE
    -- Joins by person over sets of guessed sizes (the join keys are expressions of eventid,
    -- without statistics): hash joins only, not a nested loop or a merge join of sorted sets.
    SET enable_nestloop = off
    SET enable_mergejoin = off
    -- The scans read one action's events of a few months: each month's slice looks too small
    -- to the planner for parallel workers, yet on 2 cores they halve the time (measured).
    SET parallel_setup_cost = 100
    SET parallel_tuple_cost = 0.01
    SET min_parallel_table_scan_size = 0
    SET work_mem = '128MB'
    AS $$
DECLARE
    first_id integer;
    return_id integer;
    lo bigint;  -- the starts' eventid range [lo, hi), clamped to the data (infinite ends)
    hi bigint;
    starts date[];
    bounds bigint[];
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
    first_id := (SELECT a.actionid FROM km2pg.actions a
                  WHERE a.name = km2pg.normalize_name(first_action));
    return_id := (SELECT a.actionid FROM km2pg.actions a
                   WHERE a.name = km2pg.normalize_name(return_action));
    lo := greatest(km2pg.eventid_from(since), (SELECT min(x.eventid) FROM km2pg.event_actions x));
    hi := least(km2pg.eventid_from(until), (SELECT max(x.eventid) + 1 FROM km2pg.event_actions x));
    IF first_id IS NULL OR lo IS NULL OR lo >= hi THEN
        RETURN;  -- nobody started: no cohorts
    END IF;
    -- The cohorts' units, then periods more: the end of the last cohort's last period.
    SELECT b.starts, b.bounds INTO starts, bounds
      FROM km2pg.unit_starts(unit, lo >> 32, (hi - 1) >> 32, periods) AS b;
    -- $1 first_id, $2 return_id, $3 lo, $4 hi, $5 bounds, $6 periods, $7 starts.
    RETURN QUERY EXECUTE $q$
    WITH candidates AS MATERIALIZED (
        -- People with a first_action in [since, until), and their first one there.
        SELECT coalesce(a.personid, x.eventid & 4294967295) AS personid, min(x.eventid >> 32) AS s
          FROM km2pg.event_actions x
          LEFT JOIN km2pg.merged_identities a ON a.userid = x.eventid & 4294967295
         WHERE x.actionid = $1 AND x.eventid >= $3 AND x.eventid < $4
         GROUP BY 1
    ),
    earlier AS (
        -- Candidates who did first_action before since: their start is not in the range.
        SELECT DISTINCT p.personid
          FROM (SELECT coalesce(a.personid, x.eventid & 4294967295) AS personid
                  FROM km2pg.event_actions x
                  LEFT JOIN km2pg.merged_identities a ON a.userid = x.eventid & 4294967295
                 WHERE x.actionid = $1 AND x.eventid < $3) AS p
         WHERE EXISTS (SELECT FROM candidates c WHERE c.personid = p.personid)
    ),
    cohorts AS MATERIALIZED (
        SELECT c.personid, c.s, width_bucket(c.s, $5) AS b
          FROM candidates c
         WHERE NOT EXISTS (SELECT FROM earlier e WHERE e.personid = c.personid)
    ),
    counted AS (
        -- Each cohort person once per unit with a return_action at or after their start.
        SELECT r.b, r.n, count(*) AS back
          FROM (SELECT DISTINCT c.b, width_bucket(p.s, $5) - c.b AS n, c.personid
                  FROM (SELECT coalesce(a.personid, x.eventid & 4294967295) AS personid,
                               x.eventid >> 32 AS s
                          FROM km2pg.event_actions x
                          LEFT JOIN km2pg.merged_identities a ON a.userid = x.eventid & 4294967295
                         WHERE x.actionid = $2 AND x.eventid >= $3
                           AND x.eventid < ($5[cardinality($5)] << 32)) AS p
                  JOIN cohorts c ON c.personid = p.personid AND p.s >= c.s) AS r
         WHERE r.n < $6
         GROUP BY 1, 2
    ),
    sizes AS (
        SELECT c.b, count(*) AS size FROM cohorts c GROUP BY c.b
    )
    SELECT $7[z.b], z.size, g.n, coalesce(k.back, 0), round(coalesce(k.back, 0)::numeric / z.size, 4)
      FROM sizes z
     CROSS JOIN generate_series(0, $6 - 1) AS g (n)
      LEFT JOIN counted k ON k.b = z.b AND k.n = g.n
     ORDER BY z.b, g.n
    $q$ USING first_id, return_id, lo, hi, bounds, periods, starts;
END $$;

-- ---------------------------------------------------------------------------------------------
-- 9. revenue

CREATE OR REPLACE FUNCTION km2pg.revenue(key text DEFAULT 'billing amount',
                              since timestamptz DEFAULT '-infinity',
                              until timestamptz DEFAULT 'infinity', unit text DEFAULT 'month')
    RETURNS TABLE (period_start date, revenue numeric, payers bigint, per_payer numeric)
    LANGUAGE plpgsql STABLE
    SET work_mem = '128MB'  -- as funnel: hash tables of a million people
    AS $$
DECLARE
    key_id integer;
    lo bigint;  -- the eventid range [lo, hi), clamped to the data (infinite ends)
    hi bigint;
    starts date[];
    bounds bigint[];
BEGIN
    PERFORM km2pg.check_range(since, until);
    PERFORM km2pg.check_unit(unit);
    IF key IS NULL THEN
        RAISE EXCEPTION 'key must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key_id := (SELECT k.keyid FROM km2pg.keys k WHERE k.name = km2pg.normalize_name(key));
    lo := greatest(km2pg.eventid_from(since), (SELECT min(p.eventid) FROM km2pg.event_properties p));
    hi := least(km2pg.eventid_from(until), (SELECT max(p.eventid) + 1 FROM km2pg.event_properties p));
    IF key_id IS NULL OR lo IS NULL OR lo >= hi THEN
        RETURN;
    END IF;
    SELECT b.starts, b.bounds INTO starts, bounds
      FROM km2pg.unit_starts(unit, lo >> 32, (hi - 1) >> 32, 1) AS b;
    -- $1 key_id, $2 lo, $3 hi, $4 bounds, $5 starts. Sums of numeric are exact: summing per
    -- person, then per period gives the very same totals. People through the aliased
    -- identities only (personid <> userid): a hash table of those, not of every identity.
    RETURN QUERY EXECUTE $q$
    SELECT $5[p.b], sum(p.amount), count(*), round(sum(p.amount) / count(*), 4)
      FROM (SELECT width_bucket(v.s, $4) AS b, coalesce(a.personid, v.userid) AS personid,
                   sum(v.amount) AS amount
              FROM (SELECT p.eventid & 4294967295 AS userid, p.eventid >> 32 AS s,
                           km2pg.num(p.value) AS amount
                      FROM km2pg.event_properties p
                     WHERE p.keyid = $1 AND p.eventid >= $2 AND p.eventid < $3) AS v
              LEFT JOIN km2pg.merged_identities a ON a.userid = v.userid
             WHERE v.amount IS NOT NULL
             GROUP BY 1, 2) AS p
     GROUP BY p.b
     ORDER BY p.b
    $q$ USING key_id, lo, hi, bounds, starts;
END $$;

-- ---------------------------------------------------------------------------------------------
-- 6. funnel: as in migration 2, its events matched to people through merged_identities.

CREATE OR REPLACE FUNCTION km2pg.funnel(steps text[], since timestamptz, until timestamptz,
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
            SELECT coalesce(m.personid, x.eventid & 4294967295) AS personid, x.eventid >> 32 AS s,
                   x.actionid
              FROM km2pg.event_actions x
              LEFT JOIN km2pg.merged_identities m ON m.userid = x.eventid & 4294967295
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

-- ---------------------------------------------------------------------------------------------
-- 8. ab_test: as in migration 2, people through merged_identities, planned per call.

CREATE OR REPLACE FUNCTION km2pg.ab_test(experiment_key text, conversion_action text, since timestamptz,
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
    -- $1 key_id, $2 action_id, $3 and $4 the eventid range [since, until).
    RETURN QUERY EXECUTE $q$
    WITH exposed AS (
        SELECT DISTINCT ON (e.personid) e.personid, e.v, e.s
          FROM (SELECT coalesce(m.personid, p.eventid & 4294967295) AS personid, p.value AS v,
                       p.eventid >> 32 AS s, p.revision, p.lineno
                  FROM km2pg.event_properties p
                  LEFT JOIN km2pg.merged_identities m ON m.userid = p.eventid & 4294967295
                 WHERE p.keyid = $1 AND p.eventid >= $3 AND p.eventid < $4) AS e
         ORDER BY e.personid, e.s, e.revision, e.lineno, e.v COLLATE "C"
    ),
    conversions AS (
        SELECT coalesce(m.personid, x.eventid & 4294967295) AS personid,
               max(x.eventid >> 32) AS last_s
          FROM km2pg.event_actions x
          LEFT JOIN km2pg.merged_identities m ON m.userid = x.eventid & 4294967295
         WHERE x.actionid = $2 AND x.eventid >= $3 AND x.eventid < $4
         GROUP BY 1
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
     ORDER BY s.is_control DESC, s.v COLLATE "C"
    $q$ USING key_id, action_id, km2pg.eventid_from(since), km2pg.eventid_from(until);
END $$;
