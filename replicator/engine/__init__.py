"""The copy engine: copying images, shared source reads, running one job and the job runner."""
