"""launch: the same config as a job on torchrun, Google Cloud Batch, Vertex AI, GKE (JobSet) or SkyPilot.

Targets render the common spec (spec.py) into the engine's own types and submit it with the engine's
own client; every node runs ``tuneline node`` (node.py), which resumes from the bucket's newest valid
checkpoint, so a preempted node costs at most ``train.save_steps`` of work.
"""
