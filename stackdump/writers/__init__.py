"""The report's other shapes: threads merged by stack (`grouped`), one JSON document
(`json_doc`), folded stacks for flame graphs (`folded`), colour for a terminal (`colour`).
Each takes the same `Report` the default text (stackdump.report) is written from, and yields
lines; none does I/O."""
