"""Names the capture, rollup and judgement modules share about the stored data."""

# the operation of the rollup's site-wide aggregate rows (every operation of a period merged);
# capture renames a measured operation that would carry it
ALL_OPERATIONS = "(all operations)"
