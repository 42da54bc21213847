"""Where batches come from: the live source (the program on interfaces, and its feeds
per delivery) and -r's replay, both with one face for app.py (start, poll, finish).

Only here and in kernel/ are kernel resources held. No source imports a sink: what a
run's sinks need from the kernel reaches a source as a pipeline.Delivery.
"""
