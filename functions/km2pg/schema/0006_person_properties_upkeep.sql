-- km2pg schema: person_properties' upkeep made cheaper (see store.py, "person_properties").
--
-- The loader now folds each file's settings into person_property_state with one upsert, and
-- about a quarter of the rows it meets already exist and are updated in place. Their indexed
-- columns (personid, keyid) never change, so an update can stay on its page (a HOT update: no
-- new index entries, no index bloat) when the page has room; 10% of each page is kept free for
-- that. Only pages written from now on get the room: no table is rewritten.

ALTER TABLE km2pg.person_property_state SET (fillfactor = 90);

COMMENT ON TABLE km2pg.person_property_state IS
    'What person_properties shows, with the line each value came from. Written only by the '
    'loader (merges and repairs under the alias lock alone, plain folds sharing it); read '
    'person_properties instead.';
