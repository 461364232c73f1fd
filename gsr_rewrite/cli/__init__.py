"""The command line: `gsr-rewrite SRC -o OUT ...`, its report and its per-function diff."""
