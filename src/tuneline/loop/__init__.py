"""The closed loop: production traffic, feedback and drift become the next dataset version.

    tuneline loop collect CONFIG      the candidate pool from the serving log and kept inputs
    tuneline loop select CONFIG       active learning: the requests worth a human's label
    tuneline loop import CONFIG FILE  completed labels back (Label Studio export, CSV, JSONL)
    tuneline loop retrain CONFIG      champion snapshot + new labels -> challenger, gated against the champion
    tuneline loop decide CONFIG       the online A/B report -> promote, roll back or wait
    tuneline loop run CONFIG          all of it, idempotently (what a scheduler calls)
    tuneline loop schedule CONFIG     CronJob, Cloud Scheduler job, crontab line, Prometheus alert rule

The loop orchestrates stages (prepare, train, evaluate, register) and renders launch specs, so it sits
above both in the layers: cli > loop > launch > stages.
"""
