-- Stand-in for migration 0005, which belongs to another branch (the insight functions' speed):
-- migrations must be numbered without gaps, and this branch's 0006 needs a 0005 to run and be
-- tested. It changes nothing. Drop this file and seeds/v0005.sql when merging the real 0005.
SELECT 1;
