"""Transforms: plan where temporaries live, reorder by proved rules, strip-mine, emit."""
