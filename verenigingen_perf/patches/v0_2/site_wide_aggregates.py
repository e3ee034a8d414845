"""Site-wide aggregate rows (operation "(all operations)") for the periods rolled up before the rollup
wrote them, so that the dashboard's series and windows cover the stored history."""

from verenigingen_perf.utils.performance import rollup


def execute() -> None:
	rollup.backfill_site_wide()
