"""Research studies: questions a benchmark's miss raised, answered with their own scripts. Each writes
``benchmarks/results/<name>.json`` and its BENCHMARKS.md section like a benchmark, but sets no target
of the product's; their findings are summarised in docs/design.md."""
