"""The run report's data: everything ``reports/report.html`` shows, gathered from the stages'
outputs as plain values (strings, numbers, lists, dicts) that ``newllm.html.run_report`` only
renders. ``build.report_data`` assembles it; the report stage (``newllm.stages.report``) calls it."""
