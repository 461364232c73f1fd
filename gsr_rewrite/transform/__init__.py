"""Transforms: plan where temporaries live, reorder by proved rules, strip-mine, emit."""

#: the name a generated module imports gsr_rewrite.runtime as
RUNTIME = "_gsr"
