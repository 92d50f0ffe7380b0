"""What the tests share: the temporary DVC repository (``repo``), toy token sets and token caches
(``toy``), the per-token reference implementations (``reference``), the gradient spy
(``grad_spy``), the stage-script runners (``chain``), faults to inject (``faults``), conversation
rows (``rows``), the report's test data (``report``) and the data-parallel worker script
(``dist_worker``). Test modules import from here, never from one another."""
