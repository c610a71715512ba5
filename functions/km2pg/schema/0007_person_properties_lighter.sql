-- km2pg schema: person_properties' upkeep writes one index entry fewer per row.
--
-- Every load writes a row of person_property_state for each (person, key) its settings touch,
-- about 0.65 per property line of a file of new visitors, and each row also went into the index
-- on keyid. Nothing the loader does reads that index: its upserts, merges, repairs and forget
-- all find rows by person (the primary key, (personid, keyid)). Only a read of one key over all
-- people (the view person_properties with key = ...) used it, and for any key that most people
-- have its bitmap already visited nearly every page of the table: that read is now a parallel
-- scan of the table, at about the cost it had for the common keys (see README, "How the loader
-- keeps person_properties", for both sides' figures).

DROP INDEX km2pg.person_property_state_keyid;

COMMENT ON TABLE km2pg.person_property_state IS
    'What person_properties shows, with the line each value came from; found by person (its '
    'primary key, its only index). Written only by the loader (merges and repairs under the '
    'alias lock alone, plain folds sharing it); read person_properties instead.';
