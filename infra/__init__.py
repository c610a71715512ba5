"""km2pg's AWS CDK app: one stack that loads Kissmetrics exports from S3 into PostgreSQL."""
