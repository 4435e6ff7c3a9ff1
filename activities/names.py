"""Activity names as the Temporal UI shows them; workflows refer to activities by these."""

LOAD_CONFIG = "load_config"
PLAN_AUDIENCE = "plan_audience"
DELIVER_BATCH = "deliver_batch"
MARK_RUN = "mark_run"
REGISTER_RUN = "register_run"
