"""The pure core: values in, values out. Nothing here does I/O, reads clocks or imports asyncio.

One package per concept; a package named after a thing holds that thing in its `__init__`:
`images` (references, media types, manifests, referrers), `events` (what a bus message or a
webhook reports, parsed; `events.webhooks` per registry), `routing` (where an event goes: rules,
permission policies, a scan's plans), `jobs` (the job state machine, a job's freshness and
deletes), `transfers` (the copy plan, mounts, resumes, pace), `destinations` (reachability and
fair share of slots), `auth` (credential realms, token failures), `fleet` (claims, leases,
health).
"""
