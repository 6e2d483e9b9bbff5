"""Quality and drift monitoring: is the live model still answering the traffic it gets?

A leader-elected loop in the gateway writes one report per alias every
``monitor_interval_s`` (``monitor.service``): quality KPIs per version from the stored
conversations and feedback, and a drift test on query embeddings (``monitor.drift``). The
reports are exported as metrics, shown by ``loragate monitor``, and read by the trainer, which
starts a run for an alias whose report asks for one.
"""
