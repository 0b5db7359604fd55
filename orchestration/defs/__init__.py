"""One module per concern: resources, dbt, campaigns, ledger, events, jobs, schedules, sensors."""
