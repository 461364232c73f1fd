"""Analysis: control flow, points-to and liveness of `step` and every helper it reaches."""
