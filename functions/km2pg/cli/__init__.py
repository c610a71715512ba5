"""The ``km2pg`` command line: commands, console output, the demo, the embedded PostgreSQL and
synthetic exports. It sits above the core library and beside ``km2pg.handlers``; neither
imports the other, and nothing in the core imports this package (the Lambda asset leaves it out).
"""
