"""`python -m gsr_rewrite.corpus PACKAGE...`: see gsr_rewrite/corpus/command.py."""

from gsr_rewrite.corpus.command import main

raise SystemExit(main())
