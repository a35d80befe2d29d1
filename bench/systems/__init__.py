"""The systems under test that are not the worker, each a script run in its own process:
``passthrough`` (aiokafka, no decoding), ``plain_loop`` (the worker's job without Faust) and
``quix_job`` (the worker's job in Quix Streams)."""
