"""What the tests share: the temporary DVC repositories (``repo``), toy token sets and token
caches (``toy``), the per-token reference implementations (``reference``), the gradient spy
(``grad_spy``), the stage-script runners and run comparisons (``chain``, with the warm
``stage_server``), faults to inject (``faults``), conversation rows (``rows``), the report's test
data (``report``), ``dvc exp show``'s output (``exp_show``) and the data-parallel worker script
(``dist_worker``). Test modules import from here, never from one another."""
