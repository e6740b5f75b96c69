"""The job side: the fork server, the job process and what runs in it (applying the policy, the
`Context` a `train(ctx)` gets, digests, the fingerprint), and the supervisor that launches a job
and assembles its result. Importing this package imports no torch; its modules that run inside a
job process do.
"""
