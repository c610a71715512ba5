-- km2pg schema: retention answers faster (issue 9's speed table). Same contract and results as
-- migrations 2 and 5; see README, Insights ("Speed") for the figures.
--
-- Where migration 5's retention spent its time: hash probes, one per event row, into tables of
-- hundreds of thousands of people (cache misses, about half a microsecond each on a busy machine).
-- It matched every row to its person through merged_identities three times over (the candidates,
-- every first_action event before since, the returns), building that hash three times, and then
-- probed the candidates again for each of those rows. Now:
-- - merged_identities is read once per call;
-- - the candidates' identities are listed once (candidate_ids: each identity of each candidate
--   person, with the person and the start), and the events before since and the returns are
--   matched to them by identity: one probe per row instead of two;
-- - the returns are counted with count(DISTINCT person) per cohort and period (one sort)
--   instead of a hashed DISTINCT over every (cohort, period, person); joins and groupings sort
--   rather than hash (see the function's settings);
-- Nothing is added to the loader: no index, no table, no load cost.

-- ---------------------------------------------------------------------------------------------
-- 7. retention

CREATE OR REPLACE FUNCTION km2pg.retention(first_action text, return_action text, since timestamptz,
                                until timestamptz, unit text DEFAULT 'week', periods int DEFAULT 8)
    RETURNS TABLE (cohort date, people bigint, period int, returned bigint, share numeric)
    LANGUAGE plpgsql STABLE
    -- Joins by person over sets of guessed sizes (the join keys are expressions of eventid,
    -- without statistics): never a nested loop. Joins and groupings by sorting, not hashing:
    -- the hash tables here hold hundreds of thousands of people and each probe is a cache miss,
    -- while sorted runs are read in order (measured: 10 to 17% less CPU than hashing; the same
    -- time with parallel workers on a quiet machine).
    SET enable_nestloop = off
    SET enable_hashjoin = off
    SET enable_hashagg = off
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
    WITH merged AS MATERIALIZED (
        SELECT m.userid, m.personid FROM km2pg.merged_identities m
    ),
    candidates AS MATERIALIZED (
        -- People with a first_action in [since, until), and their first one there.
        SELECT coalesce(a.personid, x.eventid & 4294967295) AS personid, min(x.eventid >> 32) AS s
          FROM km2pg.event_actions x
          LEFT JOIN merged a ON a.userid = x.eventid & 4294967295
         WHERE x.actionid = $1 AND x.eventid >= $3 AND x.eventid < $4
         GROUP BY 1
    ),
    candidate_ids AS MATERIALIZED (
        -- Every identity of each candidate: the person's own userid and its merged identities.
        SELECT c.personid AS userid, c.personid, c.s FROM candidates c
        UNION ALL
        SELECT m.userid, c.personid, c.s FROM merged m JOIN candidates c ON c.personid = m.personid
    ),
    earlier AS (
        -- Candidates with a first_action before since: their start is not in the range.
        SELECT DISTINCT i.personid
          FROM km2pg.event_actions x
          JOIN candidate_ids i ON i.userid = x.eventid & 4294967295
         WHERE x.actionid = $1 AND x.eventid < $3
    ),
    cohort_ids AS MATERIALIZED (
        SELECT i.userid, i.personid, i.s, width_bucket(i.s, $5) AS b
          FROM candidate_ids i
         WHERE NOT EXISTS (SELECT FROM earlier e WHERE e.personid = i.personid)
    ),
    counted AS (
        -- Each cohort person once per unit with a return_action at or after their start:
        -- count(DISTINCT) sorts the rows once, cheaper than hashing half a million groups.
        SELECT r.b, r.n, count(DISTINCT r.personid) AS back
          FROM (SELECT c.b, width_bucket(x.eventid >> 32, $5) - c.b AS n, c.personid
                  FROM km2pg.event_actions x
                  JOIN cohort_ids c ON c.userid = x.eventid & 4294967295 AND (x.eventid >> 32) >= c.s
                 WHERE x.actionid = $2 AND x.eventid >= $3
                   AND x.eventid < ($5[cardinality($5)] << 32)) AS r
         WHERE r.n < $6
         GROUP BY 1, 2
    ),
    sizes AS (
        -- One row per cohort person: the one whose identity is the person's own userid.
        SELECT c.b, count(*) AS size FROM cohort_ids c WHERE c.userid = c.personid GROUP BY c.b
    )
    SELECT $7[z.b], z.size, g.n, coalesce(k.back, 0), round(coalesce(k.back, 0)::numeric / z.size, 4)
      FROM sizes z
     CROSS JOIN generate_series(0, $6 - 1) AS g (n)
      LEFT JOIN counted k ON k.b = z.b AND k.n = g.n
     ORDER BY z.b, g.n
    $q$ USING first_id, return_id, lo, hi, bounds, periods, starts;
END $$;

COMMENT ON FUNCTION km2pg.retention(text, text, timestamptz, timestamptz, text, int) IS
    'Cohorts by the unit of each person''s first first_action, and how many came back with '
    'return_action in each of the next periods units. Reads merged_identities once and matches '
    'events to the candidates'' identities.';
