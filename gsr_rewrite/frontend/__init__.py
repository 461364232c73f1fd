"""Front end: parse a module, find optimizer classes and helpers, and say what each op does."""
