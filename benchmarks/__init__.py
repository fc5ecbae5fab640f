"""kdbench's application, on the library (``kdcore``), the methods and the reports: the runner and CLI (``run``), the grid
(``grid``), the teacher cache (``teachers``), DDP (``distributed``), Slurm scale-out (``scaleout``), the speed benchmark
(``speed``) and the library API (``api``)."""
